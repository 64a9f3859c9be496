//! Pages of a list report: the body stays a JSON array, at most `limit` items (1000 by
//! default, 10,000 at most) in a stable order, and `X-Next-After` carries the cursor of
//! the next page when there is one (pass it back as `after`).

use axum::http::{header::HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
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

/// The key a keyset cursor names (none: the first page), and the page size. The store
/// is asked for one more than the page, so that [`keyed`] knows whether another follows.
pub fn key_after<K: DeserializeOwned>(params: &PageParams) -> Result<(Option<K>, u32), ApiError> {
    let limit = params.limit()? as u32;
    let Some(cursor) = &params.after else { return Ok((None, limit)) };
    let key = hex::decode(cursor)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "after: not a cursor this list gave"))?;
    Ok((Some(key), limit))
}

/// One page of `rows`, read in SQL along an index with `limit + 1`: the body a JSON
/// array of at most `limit`, `X-Next-After` the last one's key when more follow.
pub fn keyed<R, T: Serialize, K: Serialize>(
    mut rows: Vec<R>,
    limit: u32,
    key: impl Fn(&R) -> K,
    out: impl FnMut(R) -> T,
) -> Response {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = rows.last().filter(|_| more).and_then(|last| serde_json::to_vec(&key(last)).ok());
    let body: Vec<T> = rows.into_iter().map(out).collect();
    let mut response = Json(body).into_response();
    if let Some(next) = next.and_then(|json| HeaderValue::from_str(&hex::encode(json)).ok()) {
        response.headers_mut().insert("x-next-after", next);
    }
    response
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

    async fn body(r: Response) -> (Vec<u64>, Option<String>) {
        let next = r.headers().get("x-next-after").map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap();
        (serde_json::from_slice(&bytes).unwrap(), next)
    }

    /// A store stand-in: the keys after `after`, `limit` of them.
    fn read(after: Option<u64>, limit: u32) -> Vec<u64> {
        (0..10).filter(|k| after.is_none_or(|a| *k > a)).take(limit as usize).collect()
    }

    #[tokio::test]
    async fn keyset_pages_follow_each_other_in_order_without_gaps_or_repeats() {
        let (mut seen, mut after) = (Vec::new(), None);
        loop {
            let params = PageParams { after: after.clone(), limit: Some(3) };
            let (key, limit) = key_after::<u64>(&params).unwrap();
            let (items, next) = body(keyed(read(key, limit + 1), limit, |k| *k, |k| k)).await;
            assert!(items.len() <= 3);
            seen.extend(items);
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, (0..10).collect::<Vec<_>>(), "the last page is full and says no more follow");
        assert!(key_after::<u64>(&PageParams { after: None, limit: Some(0) }).is_err());
        assert!(key_after::<u64>(&PageParams { after: None, limit: Some(10_001) }).is_err());
        assert!(key_after::<u64>(&PageParams { after: Some("zz".into()), limit: None }).is_err());
        assert!(ordered(-1) < ordered(0) && ordered(9) < ordered(10));
    }
}
