//! Who may act: a registered device, not revoked, of an account that is not suspended. HTTP
//! checks it at login (access tokens then stand for it until a revocation, which suspension
//! and device revocation both do); libp2p checks it on every request, because a node's
//! requests carry no token.

use crate::store::{DeviceRecord, Store, StoreError};

/// Why a device may not act.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The key is not a registered device here.
    #[error("this device is not registered here")]
    UnknownDevice,
    #[error("this device was revoked")]
    DeviceRevoked,
    #[error("this account is suspended by the relay's admins")]
    AccountSuspended,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AccessError {
    /// The stable code every transport reports (`unknown_device`, `device_revoked`,
    /// `account_suspended`), or `None` for a store failure (the transport maps the store
    /// error itself).
    pub fn code(&self) -> Option<&'static str> {
        match self {
            AccessError::UnknownDevice => Some("unknown_device"),
            AccessError::DeviceRevoked => Some("device_revoked"),
            AccessError::AccountSuspended => Some("account_suspended"),
            AccessError::Store(_) => None,
        }
    }
}

/// The device behind `key`, when it may act: registered, unrevoked, its account not
/// suspended.
pub async fn live_device(store: &dyn Store, key: &str) -> Result<DeviceRecord, AccessError> {
    let device = store.device(key).await?.ok_or(AccessError::UnknownDevice)?;
    if device.revoked_at.is_some() {
        return Err(AccessError::DeviceRevoked);
    }
    account_not_suspended(store, device.account_id).await?;
    Ok(device)
}

/// Refuses a suspended account: before a login, and before a new device is added to it.
pub async fn account_not_suspended(
    store: &dyn Store,
    account: concord_proto::Id,
) -> Result<(), AccessError> {
    if store
        .admin_account(account)
        .await?
        .is_some_and(|a| a.suspended_at.is_some())
    {
        return Err(AccessError::AccountSuspended);
    }
    Ok(())
}
