//! AWX-style pagination: `{"count", "next", "previous", "results"}` with `?page=` and
//! `?page_size=` (default 25, at most 200).

use axum::http::Uri;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult};

pub const DEFAULT_PAGE_SIZE: i64 = 25;
pub const MAX_PAGE_SIZE: i64 = 200;

#[derive(Debug, Deserialize, IntoParams)]
pub struct PageParams {
    /// Page number, from 1.
    pub page: Option<String>,
    /// Results per page (default 25; more than 200 is capped at 200).
    pub page_size: Option<String>,
}

/// Filters and ordering, documented for the OpenAPI document (the list reads them from
/// the query string itself; see `listing`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListParams {
    /// Fields to order by, comma-separated; `-field` for descending.
    order_by: Option<String>,
}

/// A page request, resolved: 1-based page number and page size.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub page: i64,
    pub size: i64,
}

impl PageParams {
    pub fn resolve(&self) -> ApiResult<PageRequest> {
        let page = match self.page.as_deref() {
            None => 1,
            Some("last") => i64::MAX,
            // i64::MAX stands for "last", so it is not a page number anyone may ask for.
            Some(raw) => raw.parse::<i64>().ok().filter(|p| *p >= 1 && *p < i64::MAX).ok_or_else(invalid_page)?,
        };
        // As in DRF, a page size that is not a positive integer is ignored.
        let size = self
            .page_size
            .as_deref()
            .and_then(|raw| raw.parse::<i64>().ok())
            .filter(|s| *s >= 1)
            .map_or(DEFAULT_PAGE_SIZE, |s| s.min(MAX_PAGE_SIZE));
        Ok(PageRequest { page, size })
    }
}

impl PageRequest {
    /// Resolves `last` and checks the page exists for `count` results (page 1 always does).
    pub fn within(self, count: i64) -> ApiResult<PageRequest> {
        let pages = ((count + self.size - 1) / self.size).max(1);
        let page = if self.page == i64::MAX { pages } else { self.page };
        if page > pages {
            return Err(invalid_page());
        }
        Ok(PageRequest { page, size: self.size })
    }

    pub fn offset(self) -> i64 {
        (self.page - 1) * self.size
    }
}

fn invalid_page() -> ApiError {
    ApiError::InvalidPage
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<T>,
}

impl<T> Page<T> {
    pub fn new(uri: &Uri, request: PageRequest, count: i64, results: Vec<T>) -> Page<T> {
        let link = |page: i64| {
            let mut query: Vec<&str> =
                uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty() && !p.starts_with("page=")).collect();
            let page = format!("page={page}");
            query.push(&page);
            format!("{}?{}", uri.path(), query.join("&"))
        };
        let has_next = request.page * request.size < count;
        Page {
            count,
            next: has_next.then(|| link(request.page + 1)),
            previous: (request.page > 1).then(|| link(request.page - 1)),
            results,
        }
    }
}
