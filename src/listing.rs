//! Filters and ordering of lists, as DRF/AWX lists take them: `?field=value` (exact match)
//! and `?order_by=field` (`-field` descending, several separated by commas). Only the
//! columns a list declares can be named, so the SQL built here holds no client text:
//! values are bound as parameters.

use std::collections::BTreeMap;

use sqlx::AssertSqlSafe;

use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::pagination::PageRequest;
use crate::{bind_all, with_db};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Integer,
    Text,
    Boolean,
    /// Stored as microseconds, given as RFC 3339.
    Time,
}

/// A column a list can be filtered and ordered by.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// The name in the query string (the field name in the JSON).
    pub name: &'static str,
    /// The SQL expression.
    pub sql: &'static str,
    pub kind: Kind,
}

pub const fn column(name: &'static str, sql: &'static str, kind: Kind) -> Column {
    Column { name, sql, kind }
}

/// A value to bind.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Integer(i64),
    Text(String),
    Boolean(bool),
    /// A boolean or NULL (for an endpoint's own optional filters).
    MaybeBoolean(Option<bool>),
}

/// The `WHERE` conditions (joined with AND, or `TRUE`) and `ORDER BY` list of a request.
#[derive(Debug, Clone)]
pub struct Listing {
    pub conditions: String,
    pub order: String,
    pub binds: Vec<Bind>,
}

/// Query parameters that are not filters.
const RESERVED: &[&str] = &["page", "page_size", "order_by", "format"];

impl Listing {
    /// Reads `query`. Conditions use placeholders from `$first_param` on; `also_reserved`
    /// names parameters the endpoint handles itself; `default_order` is SQL.
    pub fn parse(
        query: Option<&str>,
        columns: &[Column],
        also_reserved: &[&str],
        default_order: &'static str,
        first_param: usize,
    ) -> ApiResult<Listing> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|_| ApiError::BadRequest("The query string is malformed.".into()))?;
        let find = |name: &str| {
            columns
                .iter()
                .find(|c| c.name == name)
                .ok_or_else(|| ApiError::BadRequest(format!("Invalid field name: {name}.")))
        };
        let mut conditions = Vec::new();
        let mut binds = Vec::new();
        let mut order = None;
        for (name, value) in &pairs {
            if name == "order_by" {
                let mut terms = Vec::new();
                for term in value.split(',').map(|t| t.trim_matches(' ')).filter(|t| !t.is_empty()) {
                    let (name, direction) = match term.strip_prefix('-') {
                        Some(name) => (name, " DESC"),
                        None => (term, " ASC"),
                    };
                    terms.push(format!("{}{direction}", find(name)?.sql));
                }
                if !terms.is_empty() {
                    order = Some(terms.join(", "));
                }
                continue;
            }
            if RESERVED.contains(&name.as_str()) || also_reserved.contains(&name.as_str()) {
                continue;
            }
            let column = find(name)?;
            let bind = parse_value(column, value)?;
            let placeholder = first_param + binds.len();
            conditions.push(match &bind {
                None => format!("{} IS NULL", column.sql),
                Some(_) => format!("{} = ${placeholder}", column.sql),
            });
            binds.extend(bind);
        }
        let conditions = if conditions.is_empty() { "TRUE".to_owned() } else { conditions.join(" AND ") };
        // The default order ends every ordering, so pages are stable.
        let order = match order {
            Some(order) => format!("{order}, {default_order}"),
            None => default_order.to_owned(),
        };
        Ok(Listing { conditions, order, binds })
    }

    /// `template` with `{where}` and `{order}` filled in, as SQL sqlx accepts.
    pub fn sql(&self, template: &str) -> AssertSqlSafe<String> {
        AssertSqlSafe(template.replace("{where}", &self.conditions).replace("{order}", &self.order))
    }

    /// Counts the rows that `from` (SQL after `FROM`, with `{where}`) matches and fetches one
    /// page of them as `T`, `select` being the column list. `fixed` binds the endpoint's own
    /// parameters, `$1` to `$n`, before the list's (which start at `fixed.len() + 1`).
    pub async fn fetch<T>(
        &self,
        db: &Db,
        fixed: &[Bind],
        select: &str,
        from: &str,
        request: PageRequest,
    ) -> ApiResult<(PageRequest, i64, Vec<T>)>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
        T: Send + Unpin,
    {
        let binds: Vec<Bind> = fixed.iter().chain(&self.binds).cloned().collect();
        let count_sql = self.sql(&format!("SELECT COUNT(*) FROM {from}"));
        let count: i64 = with_db!(db, |pool| bind_all!(sqlx::query_scalar(count_sql), &binds).fetch_one(pool).await)?;
        let request = request.within(count)?;
        let n = binds.len() + 1;
        let page_sql =
            self.sql(&format!("SELECT {select} FROM {from} ORDER BY {{order}} LIMIT ${n} OFFSET ${}", n + 1));
        let rows: Vec<T> = with_db!(db, |pool| {
            bind_all!(sqlx::query_as(page_sql), &binds).bind(request.size).bind(request.offset()).fetch_all(pool).await
        })?;
        Ok((request, count, rows))
    }
}

/// `None` for the value `null` (matches NULL); else the typed value.
fn parse_value(column: &Column, raw: &str) -> ApiResult<Option<Bind>> {
    if raw == "null" || raw == "None" {
        return Ok(None);
    }
    let invalid = || ApiError::field(column.name, format!("{raw:?} is not a valid value for {}.", column.name));
    Ok(Some(match column.kind {
        Kind::Integer => Bind::Integer(raw.parse().map_err(|_| invalid())?),
        Kind::Text if raw.contains('\0') => {
            return Err(ApiError::field(column.name, "Null characters are not allowed."));
        }
        Kind::Text => Bind::Text(raw.to_owned()),
        Kind::Boolean => Bind::Boolean(parse_bool(raw).ok_or_else(invalid)?),
        Kind::Time => {
            Bind::Integer(chrono::DateTime::parse_from_rfc3339(raw).map_err(|_| invalid())?.timestamp_micros())
        }
    }))
}

/// A boolean as DRF reads one from a query string or a form.
pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw {
        "true" | "True" | "TRUE" | "1" | "on" | "yes" => Some(true),
        "false" | "False" | "FALSE" | "0" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// Binds `$binds` (a `&[Bind]`) to the query `$query`, in order.
#[macro_export]
macro_rules! bind_all {
    ($query:expr, $binds:expr) => {{
        let mut query = $query;
        for bind in $binds {
            query = match bind {
                $crate::listing::Bind::Integer(v) => query.bind(*v),
                $crate::listing::Bind::Text(v) => query.bind(v.clone()),
                $crate::listing::Bind::Boolean(v) => query.bind(*v),
                $crate::listing::Bind::MaybeBoolean(v) => query.bind(*v),
            };
        }
        query
    }};
}

/// The query string as a map, for endpoints' own parameters.
pub fn params(query: Option<&str>) -> BTreeMap<String, String> {
    serde_urlencoded::from_str(query.unwrap_or("")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: &[Column] = &[
        column("id", "id", Kind::Integer),
        column("username", "username", Kind::Text),
        column("is_active", "is_active", Kind::Boolean),
    ];

    #[test]
    fn filters_become_bound_conditions_and_order_by_whitelisted_columns() {
        let listing =
            Listing::parse(Some("username=alice&is_active=false&order_by=-id&page=2"), COLUMNS, &[], "id", 1).unwrap();
        assert_eq!(listing.conditions, "username = $1 AND is_active = $2");
        assert_eq!(listing.binds, [Bind::Text("alice".into()), Bind::Boolean(false)]);
        assert_eq!(listing.order, "id DESC, id");
    }

    #[test]
    fn unknown_fields_and_bad_values_are_client_errors() {
        assert!(Listing::parse(Some("password_hash=x"), COLUMNS, &[], "id", 1).is_err());
        assert!(Listing::parse(Some("order_by=password_hash"), COLUMNS, &[], "id", 1).is_err());
        assert!(Listing::parse(Some("order_by=id;DROP TABLE users"), COLUMNS, &[], "id", 1).is_err());
        assert!(Listing::parse(Some("id=abc"), COLUMNS, &[], "id", 1).is_err());
        assert!(Listing::parse(Some("is_active=maybe"), COLUMNS, &[], "id", 1).is_err());
    }
}
