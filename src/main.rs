//! The `bouncer` binary: parse the command line, set up logging, run the command.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    return_big_allocations_to_the_system();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var("BOUNCER_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
    match bouncer::cli::run(bouncer::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bouncer: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Every argon2 hash allocates its memory cost (19 MiB by default) and frees it. glibc serves
/// such sizes with mmap, but after the first free it raises its mmap threshold to that size,
/// so later hashes come from the heap and the memory is kept for good (peak RSS + 19 MiB per
/// thread that ever hashed). A fixed threshold keeps them on mmap: freed means returned.
fn return_big_allocations_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any hashing.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        // Two arenas are plenty for two cores and keep fragmentation per thread down.
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
