//! Admin tokens: 256 random bits, shown once when created; the database keeps only their
//! SHA-256 (a token is as strong as a key, so a slow password hash would add nothing).

use rand::RngCore;

use crate::error::StoreError;
use crate::store::Store;

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token named {0:?} exists already: choose another --name")]
    Exists(String),
    #[error("token name {0:?} must be 1-64 printable characters")]
    BadName(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates a token called `name` and returns it (the only time it is ever visible).
pub async fn create(store: &Store, name: &str) -> Result<String, TokenError> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::BadName(name.to_owned()));
    }
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = format!("sota_{}", hex::encode(raw));
    if !store
        .insert_token(name, &crate::api::token_hash(&token), crate::now())
        .await?
    {
        return Err(TokenError::Exists(name.to_owned()));
    }
    tracing::info!(%name, "admin token created");
    Ok(token)
}
