//! Pages of a list report: the body stays a JSON array, at most `limit` items (1000 by
//! default, 10,000 at most) in a stable order, and `X-Next-After` carries the cursor of
//! the next page when there is one (pass it back as `after`).

use axum::http::{header::HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::ApiError;

pub const DEFAULT_LIMIT: u32 = 1000;
pub const MAX_LIMIT: u32 = 10_000;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// Cursor: the `X-Next-After` of the previous page.
    pub after: Option<String>,
    /// Page size (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
}

impl PageParams {
    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit.unwrap_or(DEFAULT_LIMIT) {
            n @ 1..=MAX_LIMIT => Ok(n as usize),
            n => Err(ApiError::new(StatusCode::BAD_REQUEST, format!("limit must be 1–{MAX_LIMIT}, got {n}"))),
        }
    }
}

/// One page of `items`, each with its cursor key (unique, ordered as the keys sort).
pub fn page<T: Serialize>(mut items: Vec<(String, T)>, params: PageParams) -> Result<Response, ApiError> {
    let limit = params.limit()?;
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let after = params.after.map(|cursor| after_key(&cursor));
    let start = after.as_ref().map_or(0, |after| items.partition_point(|(key, _)| key <= after));
    let rest = items.len().saturating_sub(start);
    let mut page: Vec<(String, T)> = items.into_iter().skip(start).take(limit).collect();
    let next = (rest > limit).then(|| page.last().map(|(key, _)| key.clone())).flatten();
    let body: Vec<T> = page.drain(..).map(|(_, item)| item).collect();
    let mut response = Json(body).into_response();
    if let Some(next) = next.and_then(|n| HeaderValue::from_str(&cursor(&n)).ok()) {
        response.headers_mut().insert("x-next-after", next);
    }
    Ok(response)
}

/// One page read in SQL by arrival (`id`): the body a JSON array, `X-Next-After` the
/// cursor of the next page when this one is full.
pub fn by_id<T: Serialize>(items: Vec<T>, last_id: Option<i64>, limit: u32) -> Response {
    let full = items.len() == limit as usize;
    let mut response = Json(items).into_response();
    if let Some(next) =
        last_id.filter(|_| full).and_then(|id| HeaderValue::from_str(&cursor(&ordered(id))).ok())
    {
        response.headers_mut().insert("x-next-after", next);
    }
    response
}

/// The `id` a cursor of [`by_id`] names (none: the first page).
pub fn id_after(params: &PageParams) -> Result<(Option<i64>, u32), ApiError> {
    let limit = params.limit()? as u32;
    let Some(cursor) = &params.after else { return Ok((None, limit)) };
    let id = after_key(cursor)
        .parse::<i128>()
        .ok()
        .and_then(|n| i64::try_from(n - (1i128 << 100)).ok())
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "after: not a cursor this list gave"))?;
    Ok((Some(id), limit))
}

/// Cursors go into a header and a query string: hex, whatever the key holds.
fn cursor(key: &str) -> String {
    hex::encode(key.as_bytes())
}

/// The key a cursor names; a cursor that is no hex is an empty key (the first page).
fn after_key(cursor: &str) -> String {
    hex::decode(cursor).ok().and_then(|b| String::from_utf8(b).ok()).unwrap_or_default()
}

/// A number as a key that sorts as the number does.
pub fn ordered(n: impl Into<i128>) -> String {
    format!("{:040}", n.into() + (1i128 << 100))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<(String, usize)> {
        (0..n).rev().map(|i| (ordered(i as i64), i)).collect()
    }

    async fn body(r: Response) -> (Vec<usize>, Option<String>) {
        let next = r.headers().get("x-next-after").map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap();
        (serde_json::from_slice(&bytes).unwrap(), next)
    }

    #[tokio::test]
    async fn pages_follow_each_other_in_order_without_gaps_or_repeats() {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let params = PageParams { after: after.clone(), limit: Some(3) };
            let (items, next) = body(page(keys(10), params).unwrap()).await;
            seen.extend(items);
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert!(page(keys(1), PageParams { after: None, limit: Some(0) }).is_err());
        assert!(page(keys(1), PageParams { after: None, limit: Some(10_001) }).is_err());
        assert!(ordered(-1) < ordered(0) && ordered(9) < ordered(10));
    }
}
