use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;
use zocalo_store::{DatabaseSettings, PgPools, StoreError};

use super::{AuthStore, roles_from_csv};
use crate::domain::{
    Credentials, NewUser, NextRefresh, OAuthClient, RefreshOutcome, Role, StoredKey, User,
};

mod migrations {
    refinery::embed_migrations!("migrations/postgres");
}

pub struct PostgresStore {
    pools: PgPools,
}

impl PostgresStore {
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, StoreError> {
        Ok(Self {
            pools: PgPools::connect(settings, migrations::migrations::runner()).await?,
        })
    }
}

const USER_COLUMNS: &str = "u.id, u.email, u.name, u.created_at, \
     COALESCE((SELECT string_agg(role, ',' ORDER BY role) FROM user_roles r WHERE r.user_id = u.id), '')";

fn user_from_row(row: &Row) -> User {
    User {
        id: row.get(0),
        email: row.get(1),
        name: row.get(2),
        created_at: row.get(3),
        roles: roles_from_csv(row.get(4)),
    }
}

impl PostgresStore {
    async fn load_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let client = self.pools.writer().await?;
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1");
        Ok(client
            .query_opt(&sql, &[&id])
            .await?
            .as_ref()
            .map(user_from_row))
    }
}

#[async_trait]
impl AuthStore for PostgresStore {
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        let client = self.pools.writer().await?;
        client
            .execute(
                "INSERT INTO users (id, email, name, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
                &[&user.id, &user.email.as_str(), &user.name.as_str(), &user.password_hash, &user.created_at],
            )
            .await?;
        Ok(User {
            id: user.id,
            email: user.email.as_str().to_owned(),
            name: user.name.as_str().to_owned(),
            roles: Vec::new(),
            created_at: user.created_at,
        })
    }

    async fn credentials(&self, email: &str) -> Result<Option<Credentials>, StoreError> {
        // Login reads the primary: a user who just registered must be able
        // to sign in even if the replica lags.
        let client = self.pools.writer().await?;
        let sql = format!("SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.email = $1");
        Ok(client
            .query_opt(&sql, &[&email])
            .await?
            .map(|row| Credentials {
                user: user_from_row(&row),
                password_hash: row.get(5),
            }))
    }

    async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        self.load_user(id).await
    }

    async fn users(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<User>, StoreError> {
        let client = self.pools.reader().await?;
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE ($1::uuid IS NULL OR u.id > $1) ORDER BY u.id LIMIT $2"
        );
        let rows = client.query(&sql, &[&after, &i64::from(limit)]).await?;
        Ok(rows.iter().map(user_from_row).collect())
    }

    async fn grant_role(&self, user: Uuid, role: Role) -> Result<bool, StoreError> {
        let client = self.pools.writer().await?;
        // The foreign key tells us whether the user exists.
        match client
            .execute(
                "INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&user, &role.as_str()],
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match StoreError::from(e) {
                StoreError::Constraint(name) if name.contains("user_id") => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn revoke_role(&self, user: Uuid, role: Role) -> Result<bool, StoreError> {
        let client = self.pools.writer().await?;
        client
            .execute(
                "DELETE FROM user_roles WHERE user_id = $1 AND role = $2",
                &[&user, &role.as_str()],
            )
            .await?;
        let exists = client
            .query_opt("SELECT 1 FROM users WHERE id = $1", &[&user])
            .await?
            .is_some();
        Ok(exists)
    }

    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let client = self.pools.writer().await?;
        let rows = client
            .query(
                "SELECT kid, seed, created_at FROM signing_keys ORDER BY created_at",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let seed: Vec<u8> = row.get(1);
                Ok(StoredKey {
                    kid: row.get(0),
                    seed: seed
                        .try_into()
                        .map_err(|_| StoreError::Other("stored key is not 32 bytes".into()))?,
                    created_at: row.get(2),
                })
            })
            .collect()
    }

    async fn add_signing_key(&self, key: StoredKey) -> Result<(), StoreError> {
        let client = self.pools.writer().await?;
        client
            .execute(
                "INSERT INTO signing_keys (kid, seed, created_at) VALUES ($1, $2, $3)",
                &[&key.kid, &key.seed.as_slice(), &key.created_at],
            )
            .await?;
        Ok(())
    }

    async fn insert_refresh(
        &self,
        hash: &str,
        family: Uuid,
        subject: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let client = self.pools.writer().await?;
        client
            .execute(
                "INSERT INTO refresh_tokens (token_hash, family_id, subject, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
                &[&hash, &family, &subject, &now, &expires_at],
            )
            .await?;
        Ok(())
    }

    async fn rotate_refresh(
        &self,
        presented: &str,
        next: NextRefresh,
        now: DateTime<Utc>,
    ) -> Result<RefreshOutcome, StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        // The conditional UPDATE takes the row lock: of two concurrent uses of
        // one token exactly one sees `used_at IS NULL`; the other waits, then
        // finds it used and revokes the family, successor included.
        let used = tx
            .query_opt(
                "UPDATE refresh_tokens SET used_at = $2
                 WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2
                 RETURNING family_id, subject",
                &[&presented, &now],
            )
            .await?;
        let outcome = match used {
            Some(row) => {
                let (family, subject): (Uuid, String) = (row.get(0), row.get(1));
                tx.execute(
                    "INSERT INTO refresh_tokens (token_hash, family_id, subject, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
                    &[&next.hash, &family, &subject, &now, &next.expires_at],
                )
                .await?;
                RefreshOutcome::Rotated { subject, family }
            }
            None => {
                let previous = tx
                    .query_opt(
                        "SELECT family_id, used_at IS NOT NULL FROM refresh_tokens WHERE token_hash = $1",
                        &[&presented],
                    )
                    .await?;
                match previous.map(|row| (row.get::<_, Uuid>(0), row.get::<_, bool>(1))) {
                    Some((family, true)) => {
                        tx.execute(
                            "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
                            &[&family, &now],
                        )
                        .await?;
                        RefreshOutcome::Reused { family }
                    }
                    _ => RefreshOutcome::Invalid,
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn refresh_owner(&self, hash: &str) -> Result<Option<(Uuid, String)>, StoreError> {
        let client = self.pools.writer().await?;
        Ok(client
            .query_opt(
                "SELECT family_id, subject FROM refresh_tokens WHERE token_hash = $1",
                &[&hash],
            )
            .await?
            .map(|row| (row.get(0), row.get(1))))
    }

    async fn revoke_family(&self, family: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        let client = self.pools.writer().await?;
        client
            .execute(
                "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
                &[&family, &now],
            )
            .await?;
        Ok(())
    }

    async fn revoke_subject(&self, subject: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let client = self.pools.writer().await?;
        client
            .execute(
                "UPDATE refresh_tokens SET revoked_at = $2 WHERE subject = $1 AND revoked_at IS NULL",
                &[&subject, &now],
            )
            .await?;
        Ok(())
    }

    async fn save_client(&self, client_row: OAuthClient) -> Result<(), StoreError> {
        let client = self.pools.writer().await?;
        client
            .execute(
                "INSERT INTO oauth_clients (client_id, secret_hash, name, roles, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (client_id) DO UPDATE SET secret_hash = excluded.secret_hash, name = excluded.name, roles = excluded.roles",
                &[
                    &client_row.client_id,
                    &client_row.secret_hash,
                    &client_row.name,
                    &client_row.roles.join(","),
                    &client_row.created_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn client(&self, client_id: &str) -> Result<Option<OAuthClient>, StoreError> {
        let client = self.pools.writer().await?;
        Ok(client
            .query_opt(
                "SELECT client_id, secret_hash, name, roles, created_at FROM oauth_clients WHERE client_id = $1",
                &[&client_id],
            )
            .await?
            .map(|row| OAuthClient {
                client_id: row.get(0),
                secret_hash: row.get(1),
                name: row.get(2),
                roles: roles_from_csv(row.get(3)),
                created_at: row.get(4),
            }))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pools.ping().await
    }
}
