//! Administrators (`config system admin user`, salted SHA-256 digests, never the password) and
//! the JSON-RPC login sessions, each behind its own lock. Accounts persist under `admin:` keys;
//! sessions live in memory only.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::{kv_json, Faz};

/// An administrator account (`config system admin user`). The password is kept as a salted
/// SHA-256 digest, never in clear.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AdminUser {
    pub name: String,
    pub salt: String,
    pub password_sha256: String,
    /// `Super_User`, `Standard_User`, `Restricted_User` or `No_Permission_User`.
    pub profileid: String,
    /// JSON-RPC permission: `none`, `read` or `read-write`.
    pub rpc_permit: String,
    pub description: String,
}

impl AdminUser {
    /// A new account without a password.
    pub fn new(name: &str, profileid: &str) -> Self {
        Self {
            name: name.to_string(),
            salt: String::new(),
            password_sha256: digest("", ""),
            profileid: profileid.to_string(),
            rpc_permit: "none".into(),
            description: String::new(),
        }
    }

    pub fn set_password(&mut self, password: &str, salt: &str) {
        self.salt = salt.to_string();
        self.password_sha256 = digest(salt, password);
    }

    /// Constant-time comparison of the digest.
    pub fn check_password(&self, password: &str) -> bool {
        let d = digest(&self.salt, password);
        d.len() == self.password_sha256.len()
            && d.bytes()
                .zip(self.password_sha256.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
    }

    pub fn is_super(&self) -> bool {
        self.profileid == "Super_User"
    }
}

fn digest(salt: &str, password: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0u8]);
    h.update(password.as_bytes());
    hex::encode(h.finalize())
}

/// A login session.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub last_used: i64,
}

/// The administrator accounts and the login sessions.
#[derive(Debug)]
pub struct Admins {
    users: Mutex<BTreeMap<String, AdminUser>>,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Admins {
    pub(super) fn new(users: BTreeMap<String, AdminUser>) -> Self {
        Self {
            users: Mutex::new(users),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, BTreeMap<String, AdminUser>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every account, by name.
    pub fn list(&self) -> Vec<AdminUser> {
        self.lock().values().cloned().collect()
    }

    /// The login sessions by id, locked.
    pub fn sessions(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Faz {
    pub fn admin(&self, name: &str) -> Option<AdminUser> {
        self.admins.lock().get(name).cloned()
    }

    /// Checks an administrator's password (SSH console and JSON-RPC login).
    pub fn check_admin(&self, name: &str, password: &str) -> Option<AdminUser> {
        self.admin(name).filter(|a| a.check_password(password))
    }

    /// Creates or replaces an administrator and persists it before returning.
    pub fn save_admin(&self, a: AdminUser) -> anyhow::Result<()> {
        self.store
            .kv_put(&[(format!("admin:{}", a.name), kv_json(&a))])?;
        self.admins.lock().insert(a.name.clone(), a);
        Ok(())
    }

    /// Deletes an administrator; false when it did not exist.
    pub fn delete_admin(&self, name: &str) -> anyhow::Result<bool> {
        let existed = self.admins.lock().remove(name).is_some();
        if existed {
            self.store.kv_put(&[(format!("admin:{name}"), None)])?;
        }
        Ok(existed)
    }

    /// A fresh salt for a password digest.
    pub fn new_salt(&self) -> String {
        self.token(16)
    }
}
