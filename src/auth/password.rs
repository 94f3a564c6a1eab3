//! Password hashing with argon2id, off the async runtime and with bounded parallelism, so
//! a login storm queues for the hasher instead of starving every other request: hashes run
//! on threads of their own (`max_concurrent` of them) at a lower CPU priority (nice +10), so
//! that while they keep every core busy the requests that need no hash are still served
//! first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// argon2id cost parameters (`BOUNCER_ARGON2_*`).
#[derive(Debug, Clone, Copy)]
pub struct Argon2Config {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// How many hashes may run at once (default: the number of cores).
    pub max_concurrent: usize,
    /// How many more may wait for their turn; beyond that a login is refused at once
    /// (503) instead of queueing without end.
    pub max_queued: usize,
}

impl Default for Argon2Config {
    fn default() -> Self {
        Argon2Config {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
            max_concurrent: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_queued: 256,
        }
    }
}

pub struct Passwords {
    argon2: Argon2<'static>,
    hashers: Hashers,
    /// A hash of a random password with the current parameters, verified for unknown users
    /// so that they cost the same work as a wrong password.
    dummy_hash: String,
    permits: Semaphore,
    /// Places taken ([`Place`]): hashes running or waiting, and checks on their way to one
    /// (the lockout's grant); and how many may be.
    admitted: AtomicUsize,
    capacity: usize,
    verifications: AtomicU64,
}

/// The hasher is saturated: the caller should answer 503 and say when to retry.
#[derive(Debug, thiserror::Error)]
#[error("too many password checks at once")]
pub struct Busy;

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").field("verifications", &self.verifications()).finish_non_exhaustive()
    }
}

impl Passwords {
    pub fn new(config: Argon2Config) -> anyhow::Result<Arc<Passwords>> {
        let params = Params::new(config.memory_kib, config.iterations, config.parallelism, None)
            .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let random = crate::auth::token::random_bytes::<32>();
        let dummy_hash = argon2.hash_password(&random).map_err(|e| anyhow::anyhow!("argon2: {e}"))?.to_string();
        Ok(Arc::new(Passwords {
            argon2,
            hashers: Hashers::start(config.max_concurrent.max(1))?,
            dummy_hash,
            permits: Semaphore::new(config.max_concurrent.max(1)),
            admitted: AtomicUsize::new(0),
            capacity: config.max_concurrent.max(1) + config.max_queued,
            verifications: AtomicU64::new(0),
        }))
    }

    /// How many password verifications ran since start (real or dummy): the evidence that
    /// an unknown user costs the same argon2 work as a wrong password.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Takes a place among the hashes running or waiting, or [`Busy`] when they already fill
    /// the queue. A password check takes it before anything else it costs (the lockout's
    /// grant, the database), so that a login the hasher could not take anyway is refused
    /// having cost nothing; the place is then spent on the hash ([`Place::verify`]), which
    /// keeps `max_concurrent + max_queued` an exact bound.
    pub fn reserve(self: &Arc<Self>) -> Result<Place, Busy> {
        // Never counts past the capacity, so a storm of refusals cannot push it over.
        self.admitted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < self.capacity).then_some(n + 1))
            .map(|_| Place(Arc::clone(self)))
            .map_err(|_| Busy)
    }

    /// Whether `stored` (a PHC string) was hashed otherwise than a new hash would be: another
    /// algorithm, version or cost. A login that proves the password then upgrades it
    /// ([`crate::auth::check_password_then`]).
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else { return false };
        let current = self.argon2.params();
        let algorithm = matches!(Algorithm::try_from(parsed.algorithm.as_str()), Ok(Algorithm::Argon2id));
        let version = matches!(parsed.version.map(Version::try_from).transpose(), Ok(Some(Version::V0x13)));
        let costs = Params::try_from(&parsed).is_ok_and(|params| {
            (params.m_cost(), params.t_cost(), params.p_cost())
                == (current.m_cost(), current.t_cost(), current.p_cost())
        });
        !(algorithm && version && costs)
    }

    /// Hashes `password` with the current parameters, in a place of its own.
    pub async fn hash(self: &Arc<Self>, password: &str) -> anyhow::Result<String> {
        self.reserve()?.hash(password).await
    }

    /// [`Place::verify`] in a place of its own.
    pub async fn verify(self: &Arc<Self>, password: &str, hash: Option<&str>) -> anyhow::Result<bool> {
        self.reserve()?.verify(password, hash).await
    }
}

/// A place in the hasher's queue ([`Passwords::reserve`]), spent on one hash. Dropping it
/// gives the place back, on whatever path drops it: the hash done, an error or a lockout
/// before it, a caller that gave up, a panic unwinding.
#[derive(Debug)]
#[must_use = "a place is held until it is dropped"]
pub struct Place(Arc<Passwords>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Place {
    #[tracing::instrument(skip_all)]
    pub async fn hash(self, password: &str) -> anyhow::Result<String> {
        let password = password.to_owned();
        let this = Arc::clone(&self.0);
        self.run(move || {
            this.argon2
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("argon2: {e}"))
        })
        .await?
    }

    /// Verifies `password` against `hash`, or against the dummy hash when there is none
    /// (unknown user), doing the same work either way.
    #[tracing::instrument(skip_all)]
    pub async fn verify(self, password: &str, hash: Option<&str>) -> anyhow::Result<bool> {
        let password = password.to_owned();
        let real = hash.is_some();
        let this = Arc::clone(&self.0);
        let hash = hash.unwrap_or(&this.dummy_hash).to_owned();
        self.run(move || {
            this.verifications.fetch_add(1, Ordering::Relaxed);
            let ok = match PasswordHash::new(&hash) {
                Ok(parsed) => verify_in_place(password.as_bytes(), &parsed),
                Err(_) => {
                    // A corrupt stored hash: do the work anyway so it looks like any failure.
                    let dummy = PasswordHash::new(&this.dummy_hash).expect("dummy hash parses");
                    let _ = verify_in_place(password.as_bytes(), &dummy);
                    false
                }
            };
            ok && real
        })
        .await
    }

    /// Runs `work` on a hasher thread when a permit is free. The place goes with the job and
    /// is given back when the job ends (or panics): a hash queued or running keeps its place
    /// even when nobody waits for it any more, so the queue never holds more than its
    /// capacity.
    async fn run<T: Send + 'static>(self, work: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        let passwords = Arc::clone(&self.0);
        let _permit = passwords.permits.acquire().await?;
        passwords
            .hashers
            .run(move || {
                let _place = self;
                work()
            })
            .await
    }
}

thread_local! {
    /// A hasher thread's argon2 memory (19 MiB by default): kept from one verification to the
    /// next while logins keep coming, so a login storm does not pay for mapping, faulting in
    /// and zeroing it every time (a third of the hash's cost), and given back once the thread
    /// has had nothing to do for [`KEEP_MEMORY`].
    static MEMORY: std::cell::RefCell<HashMemory> = const { std::cell::RefCell::new(HashMemory::EMPTY) };
}

/// Argon2's working memory: zeroed blocks, aligned to 2 MiB and, where the kernel allows it
/// (transparent huge pages in `madvise` or `always` mode), backed by 2 MiB pages. Argon2 reads
/// blocks at pseudo-random places across its 19 MiB; with 4 KiB pages most of those reads miss
/// the TLB, and huge pages make a hash 2.5–4% cheaper (measured: docs/PERFORMANCE.md). The
/// cost is the rounding up to a multiple of 2 MiB (19 MiB becomes 20).
struct HashMemory {
    blocks: std::ptr::NonNull<argon2::Block>,
    len: usize,
    layout: std::alloc::Layout,
}

impl HashMemory {
    const HUGE_PAGE: usize = 2 << 20;
    const EMPTY: HashMemory =
        HashMemory { blocks: std::ptr::NonNull::dangling(), len: 0, layout: std::alloc::Layout::new::<()>() };

    fn new(len: usize) -> HashMemory {
        if len == 0 {
            return HashMemory::EMPTY;
        }
        let size = (len * size_of::<argon2::Block>()).next_multiple_of(Self::HUGE_PAGE);
        let layout = std::alloc::Layout::from_size_align(size, Self::HUGE_PAGE).expect("argon2's memory fits a layout");
        // SAFETY: the layout's size is not zero.
        let start = unsafe { std::alloc::alloc(layout) };
        let Some(start) = std::ptr::NonNull::new(start) else { std::alloc::handle_alloc_error(layout) };
        // SAFETY: `start..start + size` is the allocation just made, aligned to 2 MiB, and not
        // touched yet, so that the first writes fault huge pages in. `madvise` only advises:
        // where it fails (no transparent huge pages) the memory has ordinary pages.
        // All-zero bytes are a valid `Block` (an array of `u64`).
        unsafe {
            libc::madvise(start.as_ptr().cast(), size, libc::MADV_HUGEPAGE);
            std::ptr::write_bytes(start.as_ptr(), 0, size);
        }
        HashMemory { blocks: start.cast(), len, layout }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn blocks(&mut self) -> &mut [argon2::Block] {
        // SAFETY: `len` initialised blocks live at `blocks` (or `len` is 0 and the pointer is
        // dangling but aligned), borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_ptr(), self.len) }
    }
}

impl Drop for HashMemory {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: allocated by `HashMemory::new` with this layout, freed once.
            unsafe { std::alloc::dealloc(self.blocks.as_ptr().cast(), self.layout) }
        }
    }
}

/// How long an idle hasher keeps its memory.
const KEEP_MEMORY: std::time::Duration = std::time::Duration::from_secs(1);

/// Verifies `password` against a PHC string as `PasswordVerifier` does (same parameters,
/// algorithm and version as the stored hash, constant-time comparison), in this thread's
/// reusable memory.
fn verify_in_place(password: &[u8], stored: &PasswordHash) -> bool {
    use subtle::ConstantTimeEq;
    let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else { return false };
    let Ok(params) = Params::try_from(stored) else { return false };
    let Ok(algorithm) = Algorithm::try_from(stored.algorithm.as_str()) else { return false };
    let version = match stored.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = [0u8; 64];
    let Some(out) = out.get_mut(..expected.len()) else { return false };
    let computed = MEMORY.with_borrow_mut(|memory| {
        if memory.len() != blocks {
            *memory = HashMemory::EMPTY; // the old memory goes first
            *memory = HashMemory::new(blocks);
        }
        argon2.hash_password_into_with_memory(password, salt.as_ref(), out, memory.blocks())
    });
    computed.is_ok() && bool::from(out.ct_eq(expected.as_ref()))
}

type Job = Box<dyn FnOnce() + Send>;

/// The threads that hash: as many as may hash at once (the permits keep the queue short),
/// each at nice +10, waiting on one queue. They end when the `Passwords` that owns them is
/// dropped.
struct Hashers {
    queue: Arc<Queue>,
}

#[derive(Default)]
struct Queue {
    state: std::sync::Mutex<QueueState>,
    ready: std::sync::Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: std::collections::VecDeque<Job>,
    closed: bool,
}

enum Next {
    Job(Job),
    /// Nothing came for [`KEEP_MEMORY`].
    Idle,
    Closed,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // Jobs run outside the lock, so a poisoned queue is still consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn next(&self) -> Next {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Next::Job(job);
            }
            if state.closed {
                return Next::Closed;
            }
            let (next, waited) =
                self.ready.wait_timeout(state, KEEP_MEMORY).unwrap_or_else(|poisoned| poisoned.into_inner());
            state = next;
            if waited.timed_out() && state.jobs.is_empty() && !state.closed {
                return Next::Idle;
            }
        }
    }
}

/// How much lower than the rest of the process the hashers run (`nice` +10: a tenth of the
/// CPU share of a request-serving thread when both want the core).
const HASHER_NICE: i32 = 10;

impl Hashers {
    fn start(threads: usize) -> anyhow::Result<Hashers> {
        let queue = Arc::new(Queue::default());
        for n in 0..threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new().name(format!("argon2-{n}")).spawn(move || {
                lower_priority();
                loop {
                    match queue.next() {
                        Next::Job(job) => job(),
                        Next::Idle => MEMORY.with_borrow_mut(|memory| *memory = HashMemory::EMPTY),
                        Next::Closed => return,
                    }
                }
            })?;
        }
        Ok(Hashers { queue })
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)));
        });
        self.queue.lock().jobs.push_back(job);
        self.queue.ready.notify_one();
        match result.await? {
            Ok(value) => Ok(value),
            Err(_) => Err(anyhow::anyhow!("a password hash panicked")),
        }
    }
}

impl Drop for Hashers {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.ready.notify_all();
    }
}

/// Lowers the calling thread's CPU priority (Linux: `nice` applies per thread). Failing to
/// is harmless: the hash just competes with requests as an equal.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread; no memory is shared.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, HASHER_NICE) != 0 {
            tracing::debug!("cannot lower the priority of a password hasher thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::PasswordVerifier;

    use super::*;

    #[test]
    fn hash_memory_is_zeroed_and_aligned_to_huge_pages() {
        let mut memory = HashMemory::new(19_456);
        assert_eq!(memory.len(), 19_456);
        let blocks = memory.blocks();
        assert_eq!(blocks.as_ptr() as usize % HashMemory::HUGE_PAGE, 0);
        assert!(blocks.iter().all(|block| block.as_ref().iter().all(|word| *word == 0)));
        blocks[19_455].as_mut()[127] = 7; // the last word is ours to write
        assert_eq!(HashMemory::new(0).blocks().len(), 0);
    }

    #[test]
    fn verifying_in_place_agrees_with_the_argon2_crate() {
        for (algorithm, memory_kib, iterations) in
            [(Algorithm::Argon2id, 64, 1), (Algorithm::Argon2id, 256, 2), (Algorithm::Argon2i, 128, 1)]
        {
            let params = Params::new(memory_kib, iterations, 1, None).unwrap();
            let argon2 = Argon2::new(algorithm, Version::V0x13, params);
            let stored = argon2.hash_password(b"correct horse").unwrap().to_string();
            let parsed = PasswordHash::new(&stored).unwrap();
            for (password, expected) in [(&b"correct horse"[..], true), (b"correct hors", false), (b"", false)] {
                assert_eq!(verify_in_place(password, &parsed), expected, "{stored} {password:?}");
                assert_eq!(argon2.verify_password(password, stored.as_str()).is_ok(), expected);
            }
        }
        // The memory of the last verification is reused, or replaced when the cost differs.
        assert_eq!(MEMORY.with_borrow(HashMemory::len), 128);
        let tampered = PasswordHash::new(
            "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .unwrap();
        assert!(!verify_in_place(b"anything", &tampered));
    }

    #[test]
    fn a_hash_made_otherwise_than_a_new_one_needs_redoing() {
        let config = Argon2Config { memory_kib: 64, iterations: 1, parallelism: 1, max_concurrent: 1, max_queued: 1 };
        let passwords = Passwords::new(config).unwrap();
        let hash = |algorithm, version, m, t| {
            let params = Params::new(m, t, 1, None).unwrap();
            Argon2::new(algorithm, version, params).hash_password(b"pw").unwrap().to_string()
        };
        assert!(!passwords.needs_rehash(&hash(Algorithm::Argon2id, Version::V0x13, 64, 1)));
        for outdated in [
            hash(Algorithm::Argon2id, Version::V0x13, 128, 1),
            hash(Algorithm::Argon2id, Version::V0x13, 64, 2),
            hash(Algorithm::Argon2i, Version::V0x13, 64, 1),
            hash(Algorithm::Argon2id, Version::V0x10, 64, 1),
        ] {
            assert!(passwords.needs_rehash(&outdated), "{outdated}");
        }
        assert!(!passwords.needs_rehash("not a PHC string"), "nothing to upgrade from");
    }

    #[tokio::test]
    async fn the_queue_holds_its_capacity_and_every_place_comes_back() {
        let config = Argon2Config { memory_kib: 64, iterations: 1, parallelism: 1, max_concurrent: 1, max_queued: 1 };
        let passwords = Passwords::new(config).unwrap();
        let fill = || [passwords.reserve().unwrap(), passwords.reserve().unwrap()];
        let places = fill();
        assert!(passwords.reserve().is_err(), "one hashing and one waiting, no more");
        assert!(passwords.verify("pw", None).await.unwrap_err().is::<Busy>());
        let [first, second] = places;
        drop(first);
        assert!(!second.verify("pw", None).await.unwrap(), "a place is spent on its hash");
        // Spent, abandoned before its hash, or its hash panicked: each place comes back.
        let [abandoned, panicked] = fill();
        drop(abandoned.verify("pw", None));
        assert!(panicked.run(|| panic!("boom")).await.is_err());
        let _again = fill();
        assert!(passwords.reserve().is_err());
    }

    #[tokio::test]
    async fn hashes_run_on_their_own_threads_at_a_lower_priority() {
        let hashers = Hashers::start(2).unwrap();
        let (name, nice) = hashers
            .run(|| {
                let name = std::thread::current().name().map(str::to_owned);
                // SAFETY: plain system calls on the calling thread.
                let nice = unsafe {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::getpriority(libc::PRIO_PROCESS, tid)
                };
                (name, nice)
            })
            .await
            .unwrap();
        assert!(name.is_some_and(|n| n.starts_with("argon2-")));
        assert_eq!(nice, HASHER_NICE);
        assert!(hashers.run(|| panic!("boom")).await.is_err(), "a panic is an error, not a lost hasher");
        assert_eq!(hashers.run(|| 7).await.unwrap(), 7, "the thread survived the panic");
    }

    #[tokio::test]
    async fn a_hasher_keeps_its_memory_while_busy_and_gives_it_back_when_idle() {
        let hashers = Hashers::start(1).unwrap();
        let params = Params::new(256, 1, 1, None).unwrap();
        let stored = Argon2::new(Algorithm::Argon2id, Version::V0x13, params).hash_password(b"pw").unwrap().to_string();
        let verify = move || verify_in_place(b"pw", &PasswordHash::new(&stored).unwrap());
        assert!(hashers.run(verify.clone()).await.unwrap());
        assert_eq!(hashers.run(|| MEMORY.with_borrow(HashMemory::len)).await.unwrap(), 256, "kept between two jobs");
        tokio::time::sleep(KEEP_MEMORY + std::time::Duration::from_millis(300)).await;
        assert_eq!(hashers.run(|| MEMORY.with_borrow(HashMemory::len)).await.unwrap(), 0, "given back when idle");
    }
}
