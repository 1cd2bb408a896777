use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;
use zocalo_store::{SqlitePool, StoreError};

use super::{AuthStore, roles_from_csv};
use crate::domain::{
    Credentials, NewUser, NextRefresh, OAuthClient, RefreshOutcome, Role, StoredKey, User,
};

mod migrations {
    refinery::embed_migrations!("migrations/sqlite");
}

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub fn open(path: &Path, readers: usize) -> Result<Self, StoreError> {
        Ok(Self {
            pool: SqlitePool::open(path, readers.min(8), migrations::migrations::runner())?,
        })
    }
}

const USER_COLUMNS: &str = "u.id, u.email, u.name, u.created_at, \
     COALESCE((SELECT group_concat(role, ',') FROM user_roles r WHERE r.user_id = u.id), '')";

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let roles: String = row.get(4)?;
    let mut roles = roles_from_csv(&roles);
    roles.sort();
    Ok(User {
        id: row.get(0)?,
        email: row.get(1)?,
        name: row.get(2)?,
        created_at: row.get(3)?,
        roles,
    })
}

fn load_user(conn: &Connection, id: Uuid) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1");
    Ok(conn.query_row(&sql, [id], user_from_row).optional()?)
}

#[async_trait]
impl AuthStore for SqliteStore {
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        self.pool
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO users (id, email, name, password_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![user.id, user.email.as_str(), user.name.as_str(), user.password_hash, user.created_at],
                )?;
                load_user(conn, user.id)?.ok_or(StoreError::NotFound)
            })
            .await
    }

    async fn credentials(&self, email: &str) -> Result<Option<Credentials>, StoreError> {
        let email = email.to_owned();
        self.pool
            .read(move |conn| {
                let sql = format!(
                    "SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.email = ?1"
                );
                Ok(conn
                    .query_row(&sql, [email], |row| {
                        Ok(Credentials {
                            user: user_from_row(row)?,
                            password_hash: row.get(5)?,
                        })
                    })
                    .optional()?)
            })
            .await
    }

    async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        self.pool.read(move |conn| load_user(conn, id)).await
    }

    async fn users(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<User>, StoreError> {
        self.pool
            .read(move |conn| {
                let sql = format!(
                    "SELECT {USER_COLUMNS} FROM users u WHERE (?1 IS NULL OR u.id > ?1) ORDER BY u.id LIMIT ?2"
                );
                let mut statement = conn.prepare(&sql)?;
                let users = statement
                    .query_map(params![after, limit], user_from_row)?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(users)
            })
            .await
    }

    async fn grant_role(&self, user: Uuid, role: Role) -> Result<bool, StoreError> {
        self.pool
            .write(move |conn| {
                if load_user(conn, user)?.is_none() {
                    return Ok(false);
                }
                conn.execute(
                    "INSERT INTO user_roles (user_id, role) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    params![user, role.as_str()],
                )?;
                Ok(true)
            })
            .await
    }

    async fn revoke_role(&self, user: Uuid, role: Role) -> Result<bool, StoreError> {
        self.pool
            .write(move |conn| {
                if load_user(conn, user)?.is_none() {
                    return Ok(false);
                }
                conn.execute(
                    "DELETE FROM user_roles WHERE user_id = ?1 AND role = ?2",
                    params![user, role.as_str()],
                )?;
                Ok(true)
            })
            .await
    }

    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.pool
            .read(|conn| {
                let mut statement = conn.prepare(
                    "SELECT kid, seed, created_at FROM signing_keys ORDER BY created_at",
                )?;
                let keys = statement
                    .query_map([], |row| {
                        let seed: Vec<u8> = row.get(1)?;
                        Ok((
                            row.get::<_, String>(0)?,
                            seed,
                            row.get::<_, DateTime<Utc>>(2)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                keys.into_iter()
                    .map(|(kid, seed, created_at)| {
                        let seed = seed
                            .try_into()
                            .map_err(|_| StoreError::Other("stored key is not 32 bytes".into()))?;
                        Ok(StoredKey {
                            kid,
                            seed,
                            created_at,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn add_signing_key(&self, key: StoredKey) -> Result<(), StoreError> {
        self.pool
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO signing_keys (kid, seed, created_at) VALUES (?1, ?2, ?3)",
                    params![key.kid, key.seed.to_vec(), key.created_at],
                )?;
                Ok(())
            })
            .await
    }

    async fn insert_refresh(
        &self,
        hash: &str,
        family: Uuid,
        subject: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (hash, subject) = (hash.to_owned(), subject.to_owned());
        self.pool
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO refresh_tokens (token_hash, family_id, subject, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![hash, family, subject, now, expires_at],
                )?;
                Ok(())
            })
            .await
    }

    async fn rotate_refresh(
        &self,
        presented: &str,
        next: NextRefresh,
        now: DateTime<Utc>,
    ) -> Result<RefreshOutcome, StoreError> {
        let presented = presented.to_owned();
        self.pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                let used: Option<(Uuid, String)> = tx
                    .query_row(
                        "UPDATE refresh_tokens SET used_at = ?2
                         WHERE token_hash = ?1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?2
                         RETURNING family_id, subject",
                        params![presented, now],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()?;
                let outcome = match used {
                    Some((family, subject)) => {
                        tx.execute(
                            "INSERT INTO refresh_tokens (token_hash, family_id, subject, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![next.hash, family, subject, now, next.expires_at],
                        )?;
                        RefreshOutcome::Rotated { subject, family }
                    }
                    None => {
                        let previous: Option<(Uuid, bool)> = tx
                            .query_row(
                                "SELECT family_id, used_at IS NOT NULL FROM refresh_tokens WHERE token_hash = ?1",
                                [&presented],
                                |row| Ok((row.get(0)?, row.get(1)?)),
                            )
                            .optional()?;
                        match previous {
                            Some((family, true)) => {
                                tx.execute(
                                    "UPDATE refresh_tokens SET revoked_at = ?2 WHERE family_id = ?1 AND revoked_at IS NULL",
                                    params![family, now],
                                )?;
                                RefreshOutcome::Reused { family }
                            }
                            _ => RefreshOutcome::Invalid,
                        }
                    }
                };
                tx.commit()?;
                Ok(outcome)
            })
            .await
    }

    async fn refresh_owner(&self, hash: &str) -> Result<Option<(Uuid, String)>, StoreError> {
        let hash = hash.to_owned();
        self.pool
            .read(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT family_id, subject FROM refresh_tokens WHERE token_hash = ?1",
                        [hash],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()?)
            })
            .await
    }

    async fn revoke_family(&self, family: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.pool
            .write(move |conn| {
                conn.execute(
                    "UPDATE refresh_tokens SET revoked_at = ?2 WHERE family_id = ?1 AND revoked_at IS NULL",
                    params![family, now],
                )?;
                Ok(())
            })
            .await
    }

    async fn revoke_subject(&self, subject: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let subject = subject.to_owned();
        self.pool
            .write(move |conn| {
                conn.execute(
                    "UPDATE refresh_tokens SET revoked_at = ?2 WHERE subject = ?1 AND revoked_at IS NULL",
                    params![subject, now],
                )?;
                Ok(())
            })
            .await
    }

    async fn save_client(&self, client: OAuthClient) -> Result<(), StoreError> {
        self.pool
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO oauth_clients (client_id, secret_hash, name, roles, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (client_id) DO UPDATE SET secret_hash = excluded.secret_hash, name = excluded.name, roles = excluded.roles",
                    params![client.client_id, client.secret_hash, client.name, client.roles.join(","), client.created_at],
                )?;
                Ok(())
            })
            .await
    }

    async fn client(&self, client_id: &str) -> Result<Option<OAuthClient>, StoreError> {
        let client_id = client_id.to_owned();
        self.pool
            .read(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT client_id, secret_hash, name, roles, created_at FROM oauth_clients WHERE client_id = ?1",
                        [client_id],
                        |row| {
                            Ok(OAuthClient {
                                client_id: row.get(0)?,
                                secret_hash: row.get(1)?,
                                name: row.get(2)?,
                                roles: roles_from_csv(&row.get::<_, String>(3)?),
                                created_at: row.get(4)?,
                            })
                        },
                    )
                    .optional()?)
            })
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pool.ping().await
    }
}
