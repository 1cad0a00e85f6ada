//! Optional authentication of REST requests (`rest.auth`): HTTP Basic against a file of
//! `user:password` lines, or bearer tokens from a file of tokens. A request without valid
//! credentials answers 401 with the error shape and a `WWW-Authenticate` challenge;
//! `/health` answers everyone, so probes need no secret.
//!
//! Secrets are compared in constant time: the presented and the stored ones are hashed to
//! the same length (SHA-256) and compared with `subtle`, and every stored entry is compared,
//! so neither the content nor the length of a secret, nor which entry matched, shows in
//! the response time.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use sluice_runtime::WorkerConfig;
use sluice_runtime::worker_config::RestAuth;
use subtle::{Choice, ConstantTimeEq};

use crate::ApiError;

/// Paths that answer without credentials.
const OPEN_PATHS: &[&str] = &["/health"];

const REALM: &str = "sluice";

type Digest32 = [u8; 32];

fn digest(bytes: &[u8]) -> Digest32 {
    Sha256::digest(bytes).into()
}

/// Who may call the API. `Auth::default()` lets everyone in.
#[derive(Clone, Default)]
pub struct Auth {
    inner: Arc<Mode>,
}

#[derive(Default)]
enum Mode {
    #[default]
    Open,
    /// (user, password) digests.
    Basic(Vec<(Digest32, Digest32)>),
    /// Token digests.
    Bearer(Vec<Digest32>),
}

/// The non-empty lines of a secrets file that are not `#` comments, trimmed.
fn secret_lines(key: &str, path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if lines.is_empty() {
        return Err(format!(
            "{key}: {} holds no credentials, so nobody could use the REST API",
            path.display()
        ));
    }
    Ok(lines)
}

impl Auth {
    /// The authentication `rest.auth` asks for, its secrets read now.
    pub fn from_config(config: &WorkerConfig) -> Result<Auth, String> {
        let mode = match config.rest_auth {
            RestAuth::None => Mode::Open,
            RestAuth::Basic => {
                let key = "rest.auth.credentials.file";
                let path = config
                    .rest_auth_credentials_file
                    .as_deref()
                    .ok_or_else(|| format!("rest.auth=basic needs {key}"))?;
                let mut users = Vec::new();
                for (i, line) in secret_lines(key, path)?.iter().enumerate() {
                    let (user, password) = line.split_once(':').ok_or_else(|| {
                        format!(
                            "{key}: {} line {}: expected user:password",
                            path.display(),
                            i + 1
                        )
                    })?;
                    users.push((digest(user.as_bytes()), digest(password.as_bytes())));
                }
                Mode::Basic(users)
            }
            RestAuth::Bearer => {
                let key = "rest.auth.token.file";
                let path = config
                    .rest_auth_token_file
                    .as_deref()
                    .ok_or_else(|| format!("rest.auth=bearer needs {key}"))?;
                Mode::Bearer(
                    secret_lines(key, path)?
                        .iter()
                        .map(|t| digest(t.as_bytes()))
                        .collect(),
                )
            }
        };
        Ok(Auth {
            inner: Arc::new(mode),
        })
    }

    /// Whether the `Authorization` header carries valid credentials (always, when open).
    fn allows(&self, authorization: Option<&HeaderValue>) -> bool {
        let presented = authorization.and_then(|h| h.to_str().ok()).unwrap_or("");
        match &*self.inner {
            Mode::Open => true,
            Mode::Basic(users) => {
                let Some((user, password)) = scheme_value(presented, "Basic")
                    .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                    .and_then(|raw| String::from_utf8(raw).ok())
                    .and_then(|pair| {
                        pair.split_once(':')
                            .map(|(u, p)| (digest(u.as_bytes()), digest(p.as_bytes())))
                    })
                else {
                    return false;
                };
                let mut found = Choice::from(0);
                for (u, p) in users {
                    found |= u.ct_eq(&user) & p.ct_eq(&password);
                }
                found.into()
            }
            Mode::Bearer(tokens) => {
                let Some(token) = scheme_value(presented, "Bearer").map(|t| digest(t.as_bytes()))
                else {
                    return false;
                };
                let mut found = Choice::from(0);
                for t in tokens {
                    found |= t.ct_eq(&token);
                }
                found.into()
            }
        }
    }

    /// The challenge sent with a 401.
    fn challenge(&self) -> Option<String> {
        match &*self.inner {
            Mode::Open => None,
            Mode::Basic(_) => Some(format!("Basic realm=\"{REALM}\", charset=\"UTF-8\"")),
            Mode::Bearer(_) => Some(format!("Bearer realm=\"{REALM}\"")),
        }
    }
}

/// The value after `scheme ` in an `Authorization` header (the scheme in any case).
fn scheme_value<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, value) = header.trim().split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then_some(value.trim())
        .filter(|v| !v.is_empty())
}

/// The middleware: lets authenticated requests (and open paths) through, answers 401
/// to the rest.
pub async fn require(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&request.uri().path())
        || auth.allows(request.headers().get(header::AUTHORIZATION))
    {
        return next.run(request).await;
    }
    let message = if request.headers().contains_key(header::AUTHORIZATION) {
        "The credentials given are not valid"
    } else {
        "This REST API requires authentication"
    };
    let mut response = ApiError::new(axum::http::StatusCode::UNAUTHORIZED, message).into_response();
    if let Some(value) = auth
        .challenge()
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mode: RestAuth, file: &Path) -> WorkerConfig {
        WorkerConfig {
            rest_auth: mode,
            rest_auth_credentials_file: Some(file.to_path_buf()),
            rest_auth_token_file: Some(file.to_path_buf()),
            ..WorkerConfig::default()
        }
    }

    fn basic(user: &str, password: &str) -> HeaderValue {
        let raw = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {raw}")).unwrap()
    }

    #[test]
    fn basic_credentials() {
        let dir = std::env::temp_dir().join(format!("sluice-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("users");
        std::fs::write(&file, "# admins\nalice:s3cret:with:colons\n\n  bob:pw  \n").unwrap();
        let auth = Auth::from_config(&config(RestAuth::Basic, &file)).unwrap();
        assert!(auth.allows(Some(&basic("alice", "s3cret:with:colons"))));
        assert!(auth.allows(Some(&basic("bob", "pw"))));
        assert!(!auth.allows(Some(&basic("bob", "s3cret:with:colons"))));
        assert!(!auth.allows(Some(&basic("alice", ""))));
        assert!(!auth.allows(None));
        assert!(!auth.allows(Some(&HeaderValue::from_static("Bearer pw"))));
        assert!(!auth.allows(Some(&HeaderValue::from_static("Basic !!!"))));

        std::fs::write(&file, "no colon here\n").unwrap();
        let err = Auth::from_config(&config(RestAuth::Basic, &file))
            .err()
            .unwrap();
        assert!(err.contains("line 1"), "{err}");
        std::fs::write(&file, "# nothing\n").unwrap();
        assert!(Auth::from_config(&config(RestAuth::Basic, &file)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bearer_tokens() {
        let dir = std::env::temp_dir().join(format!("sluice-auth-t-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        std::fs::write(&file, "tok-1\ntok-2\n").unwrap();
        let auth = Auth::from_config(&config(RestAuth::Bearer, &file)).unwrap();
        assert!(auth.allows(Some(&HeaderValue::from_static("Bearer tok-2"))));
        assert!(auth.allows(Some(&HeaderValue::from_static("bearer tok-1"))));
        assert!(!auth.allows(Some(&HeaderValue::from_static("Bearer tok-3"))));
        assert!(!auth.allows(Some(&HeaderValue::from_static("Bearer "))));
        assert!(!auth.allows(None));
        std::fs::remove_dir_all(&dir).unwrap();

        let missing = WorkerConfig {
            rest_auth: RestAuth::Bearer,
            ..WorkerConfig::default()
        };
        assert!(Auth::from_config(&missing).is_err());
        assert!(Auth::default().allows(None));
    }
}
