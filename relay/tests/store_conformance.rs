//! Storage conformance: every `check_*` runs against SQLite and PostgreSQL (test names
//! `sqlite::check_*` and `postgres::check_*`), so both backends keep the semantics documented
//! on the store traits. PostgreSQL comes from `CONCORD_TEST_DATABASE_URL`.

mod common;

use std::collections::BTreeSet;

use concord_proto::api::Report;
use concord_proto::id::EPOCH_MS;
use concord_proto::limits::search_terms;
use concord_proto::model::{
    Ban, Channel, ChannelKind, EventKind, Guild, Invite, Member, Message, MessageDeleted,
    ReactionCount, ReactionEvent, ReadState, Role, User,
};
use concord_proto::permissions::{Overwrite, OverwriteKind};
use concord_proto::{Id, IdGenerator, Permissions};
use concord_relay::store::{
    AcceptedInvite, AccountRecord, AuditEntry, Backend, ChallengeRecord, ChannelUpdate,
    DeviceRecord, GuildSnapshot, HistoryAnchor, InstanceInvite, InviteRefusal, NewMessage,
    RefreshOutcome, SearchParams, SessionRecord, SigningKeyRecord, Store, StoreError,
};
use futures_util::future::join_all;
use serde_json::json;

/// One `#[tokio::test]` per check and backend.
/// Refresh tokens idle longer than this are refused (30 days).
const IDLE: i64 = 30 * 24 * 3600 * 1000;

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    let (store, _dir) = crate::common::db::sqlite_store().await;
                    assert_eq!(store.backend(), super::Backend::Sqlite);
                    super::$check(&*store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $check() {
                    let store = crate::common::db::postgres_store().await;
                    assert_eq!(store.backend(), super::Backend::Postgres);
                    super::$check(&*store).await;
                }
            )*
        }
    };
}

conformance!(
    check_server_basics,
    check_worker_leases,
    check_accounts,
    check_devices,
    check_challenges,
    check_sessions_and_rotation,
    check_revoked_sessions_since,
    check_guild_create_and_snapshot,
    check_guild_delete_cascades,
    check_channels,
    check_overwrites,
    check_dms,
    check_roles,
    check_members,
    check_bans,
    check_invites,
    check_message_seq_and_idempotency,
    check_message_events,
    check_history,
    check_read_states,
    check_search,
    check_unread_cap,
    check_concurrent_sequencing,
    check_concurrent_uniqueness,
    check_group_commit,
    check_channel_seqs,
    check_refresh_idle_expiry,
    check_moderation,
    check_reports,
    check_account_deletion,
    check_instance_invites,
);

// ---------------------------------------------------------------------------------------------
// Fixtures

/// The suite's fixed clock starts here; every id and timestamp is derived from it.
const T0: i64 = EPOCH_MS + 5_000_000_000;

/// Mints time-ordered ids and timestamps, and creates the common rows.
struct Fx<'a> {
    store: &'a dyn Store,
    ids: IdGenerator,
    clock: i64,
}

impl<'a> Fx<'a> {
    fn new(store: &'a dyn Store) -> Fx<'a> {
        Fx {
            store,
            ids: IdGenerator::new(1),
            clock: T0,
        }
    }

    /// Advances the clock by one millisecond.
    fn tick(&mut self) -> i64 {
        self.clock += 1;
        self.clock
    }

    fn id(&mut self) -> Id {
        let now = self.tick();
        self.ids.next(now)
    }

    async fn account(&mut self, username: &str) -> AccountRecord {
        let id = self.id();
        let account = account_record(id, username, self.clock);
        let device = device_record(&device_key(username), id, self.clock);
        self.store
            .create_account(&account, &device)
            .await
            .expect("create_account");
        account
    }

    /// A guild with its @everyone role and one text channel, `general`.
    async fn guild(&mut self, owner: Id) -> (Guild, Channel) {
        let id = self.id();
        let guild = Guild {
            id,
            name: format!("guild {id}"),
            owner_id: owner,
            created_at: self.clock,
        };
        let general = text_channel(self.id(), id, "general", 0);
        self.store
            .create_guild(&guild, &everyone_role(id), std::slice::from_ref(&general))
            .await
            .expect("create_guild");
        (guild, general)
    }

    async fn channel(&mut self, guild_id: Id, name: &str, position: i64) -> Channel {
        let channel = text_channel(self.id(), guild_id, name, position);
        self.store
            .create_channel(&channel)
            .await
            .expect("create_channel");
        channel
    }

    /// Joins through a fresh single-use invite.
    async fn join(&mut self, guild_id: Id, user: Id) {
        let code = format!("join-{}", self.id());
        let invite = invite_record(&code, guild_id, user, Some(1), None, self.clock);
        self.store
            .create_invite(&invite)
            .await
            .expect("create_invite");
        let accepted = self
            .store
            .accept_invite(&code, user, self.tick())
            .await
            .expect("accept_invite");
        assert!(
            matches!(accepted, Ok(AcceptedInvite { joined: true, .. })),
            "join: {accepted:?}"
        );
    }

    fn new_message(&mut self, channel_id: Id, author: Id, content: &str) -> NewMessage {
        let id = self.id();
        NewMessage {
            id,
            channel_id,
            author,
            device: format!("device-of-{author}"),
            nonce: format!("nonce-{id}"),
            content: content.to_owned(),
            reply_to: None,
            mentions: Vec::new(),
            created_at: self.clock,
        }
    }

    async fn insert(&mut self, new: &NewMessage) -> Message {
        let inserted = self
            .store
            .insert_message(new)
            .await
            .expect("insert_message");
        assert!(inserted.created, "message {} was not created", new.id);
        inserted.message
    }

    async fn post(&mut self, channel_id: Id, author: Id, content: &str) -> Message {
        let new = self.new_message(channel_id, author, content);
        self.insert(&new).await
    }

    async fn post_mentioning(
        &mut self,
        channel_id: Id,
        author: Id,
        content: &str,
        mentions: &[Id],
    ) -> Message {
        let new = NewMessage {
            mentions: mentions.to_vec(),
            ..self.new_message(channel_id, author, content)
        };
        self.insert(&new).await
    }
}

fn device_key(username: &str) -> String {
    format!("dev-{username}")
}

fn account_record(id: Id, username: &str, at: i64) -> AccountRecord {
    AccountRecord {
        id,
        username: username.to_owned(),
        account_key: format!("acct-{username}"),
        created_at: at,
    }
}

fn device_record(key: &str, account_id: Id, at: i64) -> DeviceRecord {
    DeviceRecord {
        device_key: key.to_owned(),
        account_id,
        label: format!("label of {key}"),
        certificate: format!("{{\"device_key\":\"{key}\"}}"),
        certified_at: at / 1000,
        added_at: at,
        revoked_at: None,
    }
}

fn session_record(id: Id, account_id: Id, device_key: &str, at: i64) -> SessionRecord {
    SessionRecord {
        id,
        account_id,
        device_key: device_key.to_owned(),
        created_at: at,
        revoked_at: None,
    }
}

fn user(account: &AccountRecord) -> User {
    User {
        id: account.id,
        username: account.username.clone(),
    }
}

fn everyone_role(guild_id: Id) -> Role {
    Role {
        id: guild_id,
        guild_id,
        name: "@everyone".to_owned(),
        permissions: Permissions::DEFAULT_EVERYONE,
        position: 0,
    }
}

fn text_channel(id: Id, guild_id: Id, name: &str, position: i64) -> Channel {
    Channel {
        id,
        guild_id: Some(guild_id),
        kind: ChannelKind::Text,
        name: name.to_owned(),
        topic: None,
        position,
        private: false,
        slowmode_secs: 0,
        overwrites: Vec::new(),
        last_seq: 0,
        recipients: Vec::new(),
    }
}

fn dm_channel(id: Id) -> Channel {
    Channel {
        guild_id: None,
        kind: ChannelKind::Dm,
        name: String::new(),
        ..text_channel(id, Id(1), "", 0)
    }
}

fn overwrite(
    target_id: Id,
    kind: OverwriteKind,
    allow: Permissions,
    deny: Permissions,
) -> Overwrite {
    Overwrite {
        target_id,
        kind,
        allow,
        deny,
    }
}

fn invite_record(
    code: &str,
    guild_id: Id,
    inviter_id: Id,
    max_uses: Option<i64>,
    expires_at: Option<i64>,
    at: i64,
) -> Invite {
    Invite {
        code: code.to_owned(),
        guild_id,
        inviter_id,
        max_uses,
        uses: 0,
        expires_at,
        revoked: false,
        created_at: at,
    }
}

fn ids(messages: &[Message]) -> Vec<Id> {
    messages.iter().map(|m| m.id).collect()
}

fn sorted(mut ids: Vec<Id>) -> Vec<Id> {
    ids.sort();
    ids
}

fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("serialise")
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::NotFound)),
        "{what}: expected NotFound, got {result:?}"
    );
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, which: &str) {
    assert!(
        matches!(&result, Err(StoreError::Conflict(c)) if *c == which),
        "expected Conflict({which}), got {result:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Server

async fn check_server_basics(store: &dyn Store) {
    store.ping().await.expect("ping");
    let stats = store.pool_stats();
    assert!(stats.write_size >= 1 && stats.read_size >= 1, "{stats:?}");

    // The first value wins; later callers get it back.
    assert_eq!(
        store.secret_or_insert("jwt", "first").await.unwrap(),
        "first"
    );
    assert_eq!(
        store.secret_or_insert("jwt", "second").await.unwrap(),
        "first"
    );
    assert_eq!(
        store.secret_or_insert("cookie", "other").await.unwrap(),
        "other"
    );

    assert_eq!(store.signing_keys().await.unwrap(), vec![]);
    let old = SigningKeyRecord {
        kid: "k1".to_owned(),
        secret: "s1".to_owned(),
        created_at: T0,
    };
    let new = SigningKeyRecord {
        kid: "k2".to_owned(),
        secret: "s2".to_owned(),
        created_at: T0 + 10,
    };
    store.insert_signing_key(&old).await.unwrap();
    store.insert_signing_key(&new).await.unwrap();
    assert_eq!(
        store.signing_keys().await.unwrap(),
        vec![new, old],
        "newest first"
    );

    store.close().await;
    assert!(store.ping().await.is_err(), "ping after close");
}

async fn check_worker_leases(store: &dyn Store) {
    let ttl = 1_000;
    assert_eq!(store.lease_worker_id("h1", T0, ttl).await.unwrap(), 0);
    assert_eq!(store.lease_worker_id("h2", T0, ttl).await.unwrap(), 1);
    assert_eq!(store.lease_worker_id("h3", T0, ttl).await.unwrap(), 2);

    assert!(
        !store.renew_worker_id(1, "h1", T0 + 500, ttl).await.unwrap(),
        "renew by another holder"
    );
    assert!(
        store.renew_worker_id(1, "h2", T0 + 500, ttl).await.unwrap(),
        "renew by the holder"
    );
    assert!(
        !store
            .renew_worker_id(99, "h2", T0 + 500, ttl)
            .await
            .unwrap(),
        "renew of an unleased id"
    );

    // Release by the wrong holder is a no-op; by the holder it frees the id.
    store.release_worker_id(2, "h1").await.unwrap();
    assert_eq!(store.lease_worker_id("h4", T0 + 600, ttl).await.unwrap(), 3);
    store.release_worker_id(2, "h3").await.unwrap();
    assert_eq!(store.lease_worker_id("h5", T0 + 600, ttl).await.unwrap(), 2);

    // At T0 + 1000 the lease on 0 has expired (1 was renewed, 2 and 3 are newer).
    assert_eq!(store.lease_worker_id("h6", T0 + ttl, ttl).await.unwrap(), 0);
    assert!(
        !store.renew_worker_id(0, "h1", T0 + ttl, ttl).await.unwrap(),
        "the old holder lost 0"
    );
    assert!(store.renew_worker_id(0, "h6", T0 + ttl, ttl).await.unwrap());
    assert_eq!(store.lease_worker_id("h7", T0 + ttl, ttl).await.unwrap(), 4);
}

// ---------------------------------------------------------------------------------------------
// Accounts, devices, challenges, sessions

async fn check_accounts(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let alice = fx.account("alice").await;
    let bob = fx.account("bob").await;
    let ghost = fx.id();

    assert_eq!(store.account(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(store.account(ghost).await.unwrap(), None);
    assert_eq!(
        store.account_by_key(&bob.account_key).await.unwrap(),
        Some(bob.clone())
    );
    assert_eq!(store.account_by_key("acct-nobody").await.unwrap(), None);
    assert_eq!(
        store.accounts(&[bob.id, ghost, alice.id]).await.unwrap(),
        vec![alice.clone(), bob.clone()]
    );
    assert_eq!(store.accounts(&[]).await.unwrap(), vec![]);
    assert_eq!(
        store.devices(alice.id).await.unwrap(),
        vec![device_record(
            &device_key("alice"),
            alice.id,
            alice.created_at
        )],
        "the first device comes with the account"
    );

    let now = fx.tick();
    let id = fx.id();
    let same_username = AccountRecord {
        id,
        username: "alice".to_owned(),
        account_key: "acct-x1".to_owned(),
        created_at: now,
    };
    assert_conflict(
        store
            .create_account(&same_username, &device_record("dev-x1", id, now))
            .await,
        "username_taken",
    );

    let same_id = AccountRecord {
        id: alice.id,
        username: "alice2".to_owned(),
        account_key: "acct-x2".to_owned(),
        created_at: now,
    };
    assert_conflict(
        store
            .create_account(&same_id, &device_record("dev-x2", alice.id, now))
            .await,
        "account_exists",
    );

    let id = fx.id();
    let same_key = AccountRecord {
        id,
        username: "carol".to_owned(),
        account_key: alice.account_key.clone(),
        created_at: now,
    };
    assert_conflict(
        store
            .create_account(&same_key, &device_record("dev-x3", id, now))
            .await,
        "account_exists",
    );

    // A taken device key rolls the whole account back.
    let dave = account_record(fx.id(), "dave", now);
    assert_conflict(
        store
            .create_account(&dave, &device_record(&device_key("alice"), dave.id, now))
            .await,
        "device_exists",
    );
    assert_eq!(store.account(dave.id).await.unwrap(), None);
    assert_eq!(store.account_by_key(&dave.account_key).await.unwrap(), None);
    for key in ["dev-x1", "dev-x2", "dev-x3"] {
        assert_eq!(
            store.device(key).await.unwrap(),
            None,
            "failed create_account left device {key}"
        );
    }
    assert_eq!(
        store.account(alice.id).await.unwrap(),
        Some(alice.clone()),
        "conflicts must not touch alice"
    );

    // Nothing of the refused attempts blocks a clean retry.
    store
        .create_account(&dave, &device_record(&device_key("dave"), dave.id, now))
        .await
        .unwrap();
    assert_eq!(store.account(dave.id).await.unwrap(), Some(dave));
}

async fn check_devices(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let alice = fx.account("alice").await;
    let bob = fx.account("bob").await;
    let first = device_record(&device_key("alice"), alice.id, alice.created_at);
    let laptop = device_record("dev-alice-laptop", alice.id, fx.tick());

    store.add_device(&laptop).await.unwrap();
    assert_conflict(store.add_device(&laptop).await, "device_exists");
    let stolen = DeviceRecord {
        account_id: bob.id,
        ..laptop.clone()
    };
    assert_conflict(store.add_device(&stolen).await, "device_exists");

    assert_eq!(
        store.device(&laptop.device_key).await.unwrap(),
        Some(laptop.clone())
    );
    assert_eq!(store.device("dev-unknown").await.unwrap(), None);
    assert_eq!(
        store.devices(alice.id).await.unwrap(),
        vec![first.clone(), laptop.clone()],
        "ordered by added_at"
    );
    assert_eq!(store.devices(bob.id).await.unwrap().len(), 1);

    // Sessions: two live on the laptop, one already revoked there, one on the first device.
    let live_a = session_record(fx.id(), alice.id, &laptop.device_key, fx.clock);
    let live_b = session_record(fx.id(), alice.id, &laptop.device_key, fx.clock);
    let dead = session_record(fx.id(), alice.id, &laptop.device_key, fx.clock);
    let other = session_record(fx.id(), alice.id, &first.device_key, fx.clock);
    for (s, hash) in [
        (&live_a, "ha"),
        (&live_b, "hb"),
        (&dead, "hc"),
        (&other, "hd"),
    ] {
        store.create_session(s, hash).await.unwrap();
    }
    let dead_at = fx.tick();
    assert!(store.revoke_session(dead.id, dead_at).await.unwrap());

    assert_not_found(
        store
            .revoke_device(bob.id, &laptop.device_key, fx.tick())
            .await,
        "revoke another account's device",
    );
    assert_not_found(
        store
            .revoke_device(alice.id, "dev-unknown", fx.tick())
            .await,
        "revoke an unknown device",
    );

    let now = fx.tick();
    let revoked = store
        .revoke_device(alice.id, &laptop.device_key, now)
        .await
        .unwrap();
    assert_eq!(
        sorted(revoked),
        vec![live_a.id, live_b.id],
        "only the device's live sessions"
    );
    assert_eq!(
        store
            .device(&laptop.device_key)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(now)
    );
    assert_eq!(
        store.session(live_a.id).await.unwrap().unwrap().revoked_at,
        Some(now)
    );
    assert_eq!(
        store.session(dead.id).await.unwrap().unwrap().revoked_at,
        Some(dead_at),
        "earlier revocation kept"
    );
    assert_eq!(
        store.session(other.id).await.unwrap().unwrap().revoked_at,
        None
    );
    assert_eq!(
        store
            .device(&first.device_key)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        None
    );

    assert_not_found(
        store
            .revoke_device(alice.id, &laptop.device_key, fx.tick())
            .await,
        "second revoke",
    );
    assert_eq!(
        store
            .device(&laptop.device_key)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(now)
    );
}

async fn check_challenges(store: &dyn Store) {
    let challenge = |name: &str, expires_at: i64| ChallengeRecord {
        challenge: name.to_owned(),
        device_key: "dev-a".to_owned(),
        audience: "relay.example".to_owned(),
        expires_at,
    };
    let live = challenge("c-live", T0 + 100);
    store.put_challenge(&live).await.unwrap();
    assert_eq!(
        store.take_challenge("c-live", T0 + 99).await.unwrap(),
        Some(live.clone())
    );
    assert_eq!(
        store.take_challenge("c-live", T0 + 99).await.unwrap(),
        None,
        "single use"
    );
    assert_eq!(store.take_challenge("c-unknown", T0).await.unwrap(), None);

    // Expired at expires_at exactly, and taking it still consumes it.
    store
        .put_challenge(&challenge("c-expired", T0 + 100))
        .await
        .unwrap();
    assert_eq!(
        store.take_challenge("c-expired", T0 + 100).await.unwrap(),
        None
    );
    assert_eq!(
        store.take_challenge("c-expired", T0).await.unwrap(),
        None,
        "consumed even though expired"
    );

    for (name, expires_at) in [("p1", T0 + 199), ("p2", T0 + 200), ("p3", T0 + 201)] {
        store
            .put_challenge(&challenge(name, expires_at))
            .await
            .unwrap();
    }
    assert_eq!(store.purge_challenges(T0 + 200).await.unwrap(), 2);
    assert_eq!(store.purge_challenges(T0 + 200).await.unwrap(), 0);
    assert_eq!(
        store.take_challenge("p1", T0).await.unwrap(),
        None,
        "purged"
    );
    assert_eq!(
        store.take_challenge("p3", T0 + 200).await.unwrap(),
        Some(challenge("p3", T0 + 201))
    );
}

async fn check_sessions_and_rotation(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let alice = fx.account("alice").await;
    let dev = device_key("alice");
    let session = session_record(fx.id(), alice.id, &dev, fx.clock);
    store.create_session(&session, "h1").await.unwrap();
    assert_eq!(
        store.session(session.id).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(store.session(fx.id()).await.unwrap(), None);
    assert_eq!(
        store.session_by_refresh("h1").await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(store.session_by_refresh("h-unknown").await.unwrap(), None);

    let grace = 5_000;
    let t = fx.tick();
    assert_eq!(
        store
            .rotate_refresh("h1", "h2", t, grace, IDLE)
            .await
            .unwrap(),
        RefreshOutcome::Rotated(session.clone())
    );
    assert_eq!(
        store.session_by_refresh("h2").await.unwrap(),
        Some(session.clone()),
        "successor stored"
    );

    // Grace window is inclusive; a grace answer stores no new successor.
    assert_eq!(
        store
            .rotate_refresh("h1", "h2-bis", t + grace, grace, IDLE)
            .await
            .unwrap(),
        RefreshOutcome::Grace(session.clone())
    );
    assert_eq!(store.session_by_refresh("h2-bis").await.unwrap(), None);
    assert_eq!(
        store
            .rotate_refresh("h2", "h3", t + 10, grace, IDLE)
            .await
            .unwrap(),
        RefreshOutcome::Rotated(session.clone())
    );

    // Reuse after the grace window revokes the whole session.
    let late = t + grace + 1;
    match store
        .rotate_refresh("h1", "h-late", late, grace, IDLE)
        .await
        .unwrap()
    {
        RefreshOutcome::Reused(s) => assert_eq!(s.id, session.id),
        other => panic!("expected Reused, got {other:?}"),
    }
    assert_eq!(
        store.session(session.id).await.unwrap().unwrap().revoked_at,
        Some(late)
    );
    assert_eq!(store.session_by_refresh("h-late").await.unwrap(), None);
    assert_eq!(
        store
            .rotate_refresh("h3", "h4", late + 1, grace, IDLE)
            .await
            .unwrap(),
        RefreshOutcome::Invalid,
        "family revoked"
    );
    assert_eq!(
        store
            .rotate_refresh("h2", "h4", late + 1, grace, IDLE)
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    assert_eq!(
        store
            .rotate_refresh("h-unknown", "h4", late + 1, grace, IDLE)
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );

    let second = session_record(fx.id(), alice.id, &dev, fx.clock);
    store.create_session(&second, "s1").await.unwrap();
    let now = fx.tick();
    assert!(store.revoke_session(second.id, now).await.unwrap());
    assert!(
        !store.revoke_session(second.id, now + 1).await.unwrap(),
        "already revoked"
    );
    assert!(
        !store.revoke_session(fx.id(), now).await.unwrap(),
        "unknown session"
    );
    assert_eq!(
        store.session(second.id).await.unwrap().unwrap().revoked_at,
        Some(now)
    );
    assert_eq!(
        store
            .rotate_refresh("s1", "s2", now + 1, grace, IDLE)
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
}

async fn check_revoked_sessions_since(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let alice = fx.account("alice").await;
    let dev = device_key("alice");
    let [a, b, c] = [fx.id(), fx.id(), fx.id()].map(|id| session_record(id, alice.id, &dev, T0));
    for (s, hash) in [(&a, "ha"), (&b, "hb"), (&c, "hc")] {
        store.create_session(s, hash).await.unwrap();
    }
    assert!(store.revoke_session(a.id, T0 + 100).await.unwrap());
    assert!(store.revoke_session(b.id, T0 + 200).await.unwrap());

    assert_eq!(
        sorted(store.revoked_sessions_since(T0 + 100).await.unwrap()),
        vec![a.id, b.id],
        "inclusive"
    );
    assert_eq!(
        store.revoked_sessions_since(T0 + 101).await.unwrap(),
        vec![b.id]
    );
    assert_eq!(
        store.revoked_sessions_since(T0 + 201).await.unwrap(),
        vec![]
    );
}

// ---------------------------------------------------------------------------------------------
// Guilds, channels, roles, members

async fn check_guild_create_and_snapshot(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let owner = fx.account("owner").await;
    let guest = fx.account("guest").await;
    let gid = fx.id();
    let guild = Guild {
        id: gid,
        name: "Concord HQ".to_owned(),
        owner_id: owner.id,
        created_at: fx.clock,
    };
    let everyone = everyone_role(gid);
    let general = text_channel(fx.id(), gid, "general", 0);
    let voice = Channel {
        kind: ChannelKind::Voice,
        ..text_channel(fx.id(), gid, "lounge", 1)
    };
    let secret = Channel {
        topic: Some("shh".to_owned()),
        private: true,
        slowmode_secs: 0,
        overwrites: vec![
            overwrite(
                gid,
                OverwriteKind::Role,
                Permissions::NONE,
                Permissions::VIEW_CHANNEL,
            ),
            overwrite(
                guest.id,
                OverwriteKind::Member,
                Permissions::VIEW_CHANNEL,
                Permissions::SEND_MESSAGES,
            ),
        ],
        ..text_channel(fx.id(), gid, "secret", 2)
    };
    store
        .create_guild(
            &guild,
            &everyone,
            &[secret.clone(), general.clone(), voice.clone()],
        )
        .await
        .unwrap();

    // Overwrites come back ordered by target id.
    let mut secret_stored = secret.clone();
    secret_stored.overwrites.sort_by_key(|o| o.target_id);
    let snapshot = store.guild_snapshot(gid).await.unwrap().expect("snapshot");
    assert_eq!(
        snapshot,
        GuildSnapshot {
            guild: guild.clone(),
            roles: vec![everyone.clone()],
            channels: vec![general.clone(), voice.clone(), secret_stored.clone()],
        }
    );
    assert_eq!(
        snapshot.roles[0].id, guild.id,
        "@everyone's id is the guild id"
    );

    assert_eq!(store.guild(gid).await.unwrap(), Some(guild.clone()));
    assert_eq!(store.channel(secret.id).await.unwrap(), Some(secret_stored));
    assert_eq!(
        store.guilds_of(owner.id).await.unwrap(),
        vec![guild.clone()]
    );
    assert_eq!(store.guilds_of(guest.id).await.unwrap(), vec![]);
    assert_eq!(
        store.member(gid, owner.id).await.unwrap(),
        Some(Member {
            guild_id: gid,
            user: user(&owner),
            roles: vec![],
            joined_at: guild.created_at,
            timeout_until: None
        }),
        "the owner is the first member"
    );
    assert_eq!(store.member(gid, guest.id).await.unwrap(), None);
    assert_eq!(store.member_count(gid).await.unwrap(), 1);

    let renamed = store.rename_guild(gid, "Concord Lobby").await.unwrap();
    assert_eq!(
        renamed,
        Guild {
            name: "Concord Lobby".to_owned(),
            ..guild.clone()
        }
    );
    assert_eq!(store.guild(gid).await.unwrap(), Some(renamed.clone()));
    assert_eq!(
        store.guild_snapshot(gid).await.unwrap().unwrap().guild,
        renamed
    );

    let unknown = fx.id();
    assert_not_found(
        store.rename_guild(unknown, "x").await,
        "rename unknown guild",
    );
    assert_eq!(store.guild(unknown).await.unwrap(), None);
    assert_eq!(store.guild_snapshot(unknown).await.unwrap(), None);

    // create_guild is atomic: a clashing channel id leaves no guild, role or member behind.
    let half = Guild {
        id: fx.id(),
        name: "half".to_owned(),
        owner_id: guest.id,
        created_at: fx.clock,
    };
    let clash = text_channel(general.id, half.id, "clash", 0);
    assert!(
        store
            .create_guild(&half, &everyone_role(half.id), &[clash])
            .await
            .is_err()
    );
    assert_eq!(store.guild(half.id).await.unwrap(), None);
    assert_eq!(store.guilds_of(guest.id).await.unwrap(), vec![]);
    assert_eq!(store.member_count(half.id).await.unwrap(), 0);

    // A second guild shows up in guilds_of, ordered by id.
    let (other, _) = fx.guild(owner.id).await;
    assert_eq!(
        store.guilds_of(owner.id).await.unwrap(),
        vec![renamed, other]
    );
}

async fn check_guild_delete_cascades(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let owner = fx.account("owner").await;
    let member = fx.account("member").await;
    let banned = fx.account("banned").await;
    let (guild, general) = fx.guild(owner.id).await;
    let extra = fx.channel(guild.id, "extra", 1).await;
    let role = Role {
        id: fx.id(),
        guild_id: guild.id,
        name: "mods".to_owned(),
        permissions: Permissions::MANAGE_MESSAGES,
        position: 1,
    };
    store.create_role(&role).await.unwrap();
    fx.join(guild.id, member.id).await;
    assert!(
        store
            .add_member_role(guild.id, member.id, role.id)
            .await
            .unwrap()
    );
    let ow = overwrite(
        role.id,
        OverwriteKind::Role,
        Permissions::VIEW_CHANNEL,
        Permissions::NONE,
    );
    store.put_overwrite(extra.id, &ow).await.unwrap();
    let invite = invite_record("keep-out", guild.id, owner.id, None, None, fx.tick());
    store.create_invite(&invite).await.unwrap();
    store
        .ban(guild.id, banned.id, Some("spam"), owner.id, fx.tick())
        .await
        .unwrap();
    let message = fx.post(general.id, member.id, "cascading message").await;
    store
        .add_reaction(general.id, message.id, owner.id, "👍", fx.tick())
        .await
        .unwrap();
    store.ack(member.id, general.id, message.id).await.unwrap();

    store.delete_guild(guild.id).await.unwrap();

    assert_eq!(store.guild(guild.id).await.unwrap(), None);
    assert_eq!(store.guild_snapshot(guild.id).await.unwrap(), None);
    assert_eq!(store.guilds_of(owner.id).await.unwrap(), vec![]);
    assert_eq!(store.guilds_of(member.id).await.unwrap(), vec![]);
    assert_eq!(store.channel(general.id).await.unwrap(), None);
    assert_eq!(store.channel(extra.id).await.unwrap(), None);
    assert_eq!(store.member(guild.id, member.id).await.unwrap(), None);
    assert_eq!(store.member_count(guild.id).await.unwrap(), 0);
    assert_eq!(store.members(guild.id, None, 100).await.unwrap(), vec![]);
    assert_eq!(store.invite("keep-out").await.unwrap(), None);
    assert_eq!(store.invites(guild.id).await.unwrap(), vec![]);
    assert_eq!(store.bans(guild.id).await.unwrap(), vec![]);
    assert!(!store.is_banned(guild.id, banned.id).await.unwrap());
    assert_eq!(store.message(general.id, message.id).await.unwrap(), None);
    assert_eq!(
        store
            .history(general.id, HistoryAnchor::Latest, 50)
            .await
            .unwrap(),
        vec![]
    );
    assert_eq!(store.events(general.id, 0, 50).await.unwrap(), vec![]);
    assert_eq!(
        store.read_states(member.id, &[general.id]).await.unwrap(),
        vec![]
    );
    let hits = store
        .search(&search_params(&[general.id], &["cascading"]))
        .await
        .unwrap();
    assert!(hits.is_empty(), "{hits:?}");
    assert_eq!(
        store
            .accept_invite("keep-out", fx.id(), fx.tick())
            .await
            .unwrap(),
        Err(InviteRefusal::Unknown)
    );

    // Accounts outlive the guild.
    assert_eq!(store.account(member.id).await.unwrap(), Some(member));
    assert_not_found(store.delete_guild(guild.id).await, "second delete");
}

async fn check_channels(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let owner = fx.account("owner").await;
    let (guild, general) = fx.guild(owner.id).await;
    let news = Channel {
        topic: Some("daily".to_owned()),
        ..text_channel(fx.id(), guild.id, "news", 3)
    };
    store.create_channel(&news).await.unwrap();
    assert_eq!(store.channel(news.id).await.unwrap(), Some(news.clone()));

    // Absent fields keep their value (COALESCE).
    let renamed = Channel {
        name: "headlines".to_owned(),
        ..news.clone()
    };
    let update = ChannelUpdate {
        name: Some("headlines".to_owned()),
        ..ChannelUpdate::default()
    };
    assert_eq!(
        store.update_channel(news.id, &update).await.unwrap(),
        renamed
    );

    let update = ChannelUpdate {
        topic: Some("weekly".to_owned()),
        private: Some(true),
        ..ChannelUpdate::default()
    };
    let hidden = Channel {
        topic: Some("weekly".to_owned()),
        private: true,
        slowmode_secs: 0,
        ..renamed
    };
    assert_eq!(
        store.update_channel(news.id, &update).await.unwrap(),
        hidden
    );

    let update = ChannelUpdate {
        position: Some(7),
        private: Some(false),
        ..ChannelUpdate::default()
    };
    let moved = Channel {
        position: 7,
        private: false,
        slowmode_secs: 0,
        ..hidden
    };
    assert_eq!(store.update_channel(news.id, &update).await.unwrap(), moved);

    assert_eq!(
        store
            .update_channel(news.id, &ChannelUpdate::default())
            .await
            .unwrap(),
        moved
    );
    assert_eq!(store.channel(news.id).await.unwrap(), Some(moved.clone()));
    assert_not_found(
        store
            .update_channel(fx.id(), &ChannelUpdate::default())
            .await,
        "update unknown channel",
    );

    let snapshot = store.guild_snapshot(guild.id).await.unwrap().unwrap();
    assert_eq!(
        snapshot.channels,
        vec![general.clone(), moved],
        "ordered by position"
    );

    // Deleting a channel takes its messages, events, overwrites and read states along.
    let message = fx.post(news.id, owner.id, "soon gone").await;
    store.ack(owner.id, news.id, message.id).await.unwrap();
    store
        .put_overwrite(
            news.id,
            &overwrite(
                guild.id,
                OverwriteKind::Role,
                Permissions::NONE,
                Permissions::NONE,
            ),
        )
        .await
        .unwrap();
    store.delete_channel(news.id).await.unwrap();
    assert_eq!(store.channel(news.id).await.unwrap(), None);
    assert_eq!(store.message(news.id, message.id).await.unwrap(), None);
    assert_eq!(store.events(news.id, 0, 10).await.unwrap(), vec![]);
    assert_eq!(
        store.read_states(owner.id, &[news.id]).await.unwrap(),
        vec![]
    );
    assert!(
        store
            .search(&search_params(&[news.id], &["soon"]))
            .await
            .unwrap()
            .is_empty()
    );
    assert_not_found(store.delete_channel(news.id).await, "second delete");
    assert_eq!(
        store
            .guild_snapshot(guild.id)
            .await
            .unwrap()
            .unwrap()
            .channels,
        vec![general]
    );
}

async fn check_overwrites(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let owner = fx.account("owner").await;
    let guest = fx.account("guest").await;
    let (guild, general) = fx.guild(owner.id).await;
    let everyone_ow = overwrite(
        guild.id,
        OverwriteKind::Role,
        Permissions::NONE,
        Permissions::SEND_MESSAGES,
    );
    let guest_ow = overwrite(
        guest.id,
        OverwriteKind::Member,
        Permissions::SEND_MESSAGES,
        Permissions::NONE,
    );
    store.put_overwrite(general.id, &everyone_ow).await.unwrap();
    store.put_overwrite(general.id, &guest_ow).await.unwrap();
    // guest's id is older than the guild's: overwrites are ordered by target id.
    assert_eq!(
        store.channel(general.id).await.unwrap().unwrap().overwrites,
        vec![guest_ow, everyone_ow]
    );

    // Upsert replaces kind and bits of the same target.
    let everyone_ow2 = overwrite(
        guild.id,
        OverwriteKind::Role,
        Permissions::ADD_REACTIONS,
        Permissions::VIEW_CHANNEL,
    );
    store
        .put_overwrite(general.id, &everyone_ow2)
        .await
        .unwrap();
    assert_eq!(
        store.channel(general.id).await.unwrap().unwrap().overwrites,
        vec![guest_ow, everyone_ow2]
    );
    let snapshot = store.guild_snapshot(guild.id).await.unwrap().unwrap();
    assert_eq!(
        snapshot.channels[0].overwrites,
        vec![guest_ow, everyone_ow2]
    );

    assert!(store.delete_overwrite(general.id, guest.id).await.unwrap());
    assert!(
        !store.delete_overwrite(general.id, guest.id).await.unwrap(),
        "already gone"
    );
    assert!(
        !store.delete_overwrite(general.id, fx.id()).await.unwrap(),
        "never existed"
    );
    assert_eq!(
        store.channel(general.id).await.unwrap().unwrap().overwrites,
        vec![everyone_ow2]
    );

    // All permission bits survive the round trip.
    let all = overwrite(
        guest.id,
        OverwriteKind::Member,
        Permissions::ALL,
        Permissions::ALL,
    );
    store.put_overwrite(general.id, &all).await.unwrap();
    assert_eq!(
        store.channel(general.id).await.unwrap().unwrap().overwrites,
        vec![all, everyone_ow2]
    );
}

async fn check_dms(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let alice = fx.account("alice").await;
    let bob = fx.account("bob").await;
    let carol = fx.account("carol").await;

    let ab = dm_channel(fx.id());
    let opened = store.open_dm(&ab, alice.id, bob.id).await.unwrap();
    let ab_stored = Channel {
        recipients: vec![user(&alice), user(&bob)],
        ..ab.clone()
    };
    assert_eq!(opened, ab_stored);

    // Either order finds the same channel and does not create the new one.
    let unused = dm_channel(fx.id());
    assert_eq!(
        store.open_dm(&unused, bob.id, alice.id).await.unwrap(),
        ab_stored
    );
    assert_eq!(
        store.open_dm(&unused, alice.id, bob.id).await.unwrap(),
        ab_stored
    );
    assert_eq!(store.channel(unused.id).await.unwrap(), None);

    // Recipients are ordered by id whatever the argument order.
    let ca = dm_channel(fx.id());
    let ca_stored = Channel {
        recipients: vec![user(&alice), user(&carol)],
        ..ca.clone()
    };
    assert_eq!(
        store.open_dm(&ca, carol.id, alice.id).await.unwrap(),
        ca_stored
    );

    assert_eq!(store.channel(ab.id).await.unwrap(), Some(ab_stored.clone()));
    assert_eq!(
        store.dm_channels(alice.id).await.unwrap(),
        vec![ab_stored.clone(), ca_stored.clone()]
    );
    assert_eq!(store.dm_channels(bob.id).await.unwrap(), vec![ab_stored]);
    assert_eq!(store.dm_channels(carol.id).await.unwrap(), vec![ca_stored]);
    assert_eq!(store.dm_channels(fx.id()).await.unwrap(), vec![]);

    // DM messages carry no guild id.
    let message = fx.post(ab.id, alice.id, "psst").await;
    assert_eq!(message.guild_id, None);
    assert_eq!(message.seq, 1);
    assert_eq!(
        store
            .open_dm(&unused, alice.id, bob.id)
            .await
            .unwrap()
            .last_seq,
        1
    );
}

async fn check_roles(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let owner = fx.account("owner").await;
    let member = fx.account("member").await;
    let outsider = fx.account("outsider").await;
    let (guild, general) = fx.guild(owner.id).await;
    let (other_guild, _) = fx.guild(owner.id).await;
    fx.join(guild.id, member.id).await;

    let everyone = everyone_role(guild.id);
    let mods = Role {
        id: fx.id(),
        guild_id: guild.id,
        name: "mods".to_owned(),
        permissions: Permissions::MANAGE_MESSAGES,
        position: 1,
    };
    let helpers = Role {
        id: fx.id(),
        guild_id: guild.id,
        name: "helpers".to_owned(),
        permissions: Permissions::NONE,
        position: 2,
    };
    let foreign = Role {
        id: fx.id(),
        guild_id: other_guild.id,
        name: "foreign".to_owned(),
        permissions: Permissions::NONE,
        position: 1,
    };
    for role in [&mods, &helpers, &foreign] {
        store.create_role(role).await.unwrap();
    }
    let roles = |id| async move { store.guild_snapshot(id).await.unwrap().unwrap().roles };
    assert_eq!(
        roles(guild.id).await,
        vec![everyone.clone(), mods.clone(), helpers.clone()]
    );
    assert_eq!(
        roles(other_guild.id).await,
        vec![everyone_role(other_guild.id), foreign.clone()]
    );

    let mods2 = Role {
        name: "moderators".to_owned(),
        permissions: Permissions::MANAGE_MESSAGES | Permissions::KICK_MEMBERS,
        position: 5,
        ..mods.clone()
    };
    store.update_role(&mods2).await.unwrap();
    assert_eq!(
        roles(guild.id).await,
        vec![everyone.clone(), helpers.clone(), mods2.clone()],
        "ordered by position"
    );
    assert_not_found(
        store
            .update_role(&Role {
                id: fx.id(),
                ..mods2.clone()
            })
            .await,
        "update unknown role",
    );
    assert_not_found(
        store
            .update_role(&Role {
                guild_id: other_guild.id,
                ..mods2.clone()
            })
            .await,
        "update via another guild",
    );

    // Member roles: only existing roles of the guild, only for members, no duplicates.
    assert!(
        store
            .add_member_role(guild.id, member.id, mods.id)
            .await
            .unwrap()
    );
    assert!(
        !store
            .add_member_role(guild.id, member.id, mods.id)
            .await
            .unwrap(),
        "already held"
    );
    assert!(
        store
            .add_member_role(guild.id, member.id, helpers.id)
            .await
            .unwrap()
    );
    assert!(
        !store
            .add_member_role(guild.id, member.id, foreign.id)
            .await
            .unwrap(),
        "role of another guild"
    );
    assert!(
        !store
            .add_member_role(guild.id, outsider.id, mods.id)
            .await
            .unwrap(),
        "not a member"
    );
    assert!(
        !store
            .add_member_role(guild.id, member.id, fx.id())
            .await
            .unwrap(),
        "unknown role"
    );
    assert_eq!(
        sorted(
            store
                .member(guild.id, member.id)
                .await
                .unwrap()
                .unwrap()
                .roles
        ),
        vec![mods.id, helpers.id]
    );

    assert!(
        store
            .remove_member_role(guild.id, member.id, helpers.id)
            .await
            .unwrap()
    );
    assert!(
        !store
            .remove_member_role(guild.id, member.id, helpers.id)
            .await
            .unwrap(),
        "already removed"
    );
    assert!(
        store
            .add_member_role(guild.id, member.id, helpers.id)
            .await
            .unwrap()
    );

    let mods_ow = overwrite(
        mods.id,
        OverwriteKind::Role,
        Permissions::MANAGE_MESSAGES,
        Permissions::NONE,
    );
    let helpers_ow = overwrite(
        helpers.id,
        OverwriteKind::Role,
        Permissions::NONE,
        Permissions::SEND_MESSAGES,
    );
    store.put_overwrite(general.id, &mods_ow).await.unwrap();
    store.put_overwrite(general.id, &helpers_ow).await.unwrap();

    // A delete through the wrong guild changes nothing.
    assert!(!store.delete_role(other_guild.id, helpers.id).await.unwrap());
    assert_eq!(
        roles(guild.id).await,
        vec![everyone.clone(), helpers.clone(), mods2.clone()]
    );
    assert_eq!(
        store.channel(general.id).await.unwrap().unwrap().overwrites,
        vec![mods_ow, helpers_ow],
        "delete_role via another guild must not remove the role's overwrites"
    );

    // Deleting a role removes its overwrites and member assignments.
    assert!(store.delete_role(guild.id, mods.id).await.unwrap());
    assert!(
        !store.delete_role(guild.id, mods.id).await.unwrap(),
        "already deleted"
    );
    assert_eq!(roles(guild.id).await, vec![everyone, helpers.clone()]);
    assert_eq!(
        store
            .member(guild.id, member.id)
            .await
            .unwrap()
            .unwrap()
            .roles,
        vec![helpers.id]
    );
    let remaining: Vec<Id> = store
        .channel(general.id)
        .await
        .unwrap()
        .unwrap()
        .overwrites
        .iter()
        .map(|o| o.target_id)
        .collect();
    assert!(
        !remaining.contains(&mods.id),
        "overwrite of the deleted role survived: {remaining:?}"
    );
}

async fn check_members(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let owner = fx.account("owner").await;
    let mut users = Vec::new();
    for name in ["u1", "u2", "u3", "u4", "u5"] {
        users.push(fx.account(name).await);
    }
    let (guild, _) = fx.guild(owner.id).await;
    let mut joined_at = Vec::new();
    for u in &users {
        fx.join(guild.id, u.id).await;
        joined_at.push(fx.clock);
    }
    let role = Role {
        id: fx.id(),
        guild_id: guild.id,
        name: "r".to_owned(),
        permissions: Permissions::NONE,
        position: 1,
    };
    store.create_role(&role).await.unwrap();
    assert!(
        store
            .add_member_role(guild.id, users[1].id, role.id)
            .await
            .unwrap()
    );

    assert_eq!(store.member_count(guild.id).await.unwrap(), 6);
    assert_eq!(
        store.member(guild.id, users[1].id).await.unwrap(),
        Some(Member {
            guild_id: guild.id,
            user: user(&users[1]),
            roles: vec![role.id],
            joined_at: joined_at[1],
            timeout_until: None
        })
    );

    // Pages by user id: owner, u1, u2 | u3, u4, u5 | nothing.
    let page = |after: Option<Id>, limit| async move {
        store
            .members(guild.id, after, limit)
            .await
            .unwrap()
            .iter()
            .map(|m| m.user.id)
            .collect::<Vec<_>>()
    };
    let all: Vec<Id> = std::iter::once(owner.id)
        .chain(users.iter().map(|u| u.id))
        .collect();
    assert_eq!(page(None, 3).await, all[..3]);
    assert_eq!(page(Some(all[2]), 3).await, all[3..]);
    assert_eq!(page(Some(all[5]), 3).await, Vec::<Id>::new());
    assert_eq!(page(None, 100).await, all);
    assert_eq!(page(Some(all[4]), 100).await, all[5..]);
    let first_page = store.members(guild.id, None, 3).await.unwrap();
    assert_eq!(
        first_page[0],
        Member {
            guild_id: guild.id,
            user: user(&owner),
            roles: vec![],
            joined_at: guild.created_at,
            timeout_until: None
        }
    );
    assert_eq!(
        first_page[2].roles,
        vec![role.id],
        "members() carries roles too"
    );

    assert!(store.remove_member(guild.id, users[1].id).await.unwrap());
    assert!(
        !store.remove_member(guild.id, users[1].id).await.unwrap(),
        "already removed"
    );
    assert_eq!(store.member(guild.id, users[1].id).await.unwrap(), None);
    assert_eq!(store.member_count(guild.id).await.unwrap(), 5);
    assert_eq!(store.guilds_of(users[1].id).await.unwrap(), vec![]);

    // Rejoining starts without the old roles.
    fx.join(guild.id, users[1].id).await;
    assert_eq!(
        store
            .member(guild.id, users[1].id)
            .await
            .unwrap()
            .unwrap()
            .roles,
        vec![]
    );
    assert_eq!(store.member_count(guild.id).await.unwrap(), 6);
}

async fn check_bans(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let owner = fx.account("owner").await;
    let troll = fx.account("troll").await;
    let lurker = fx.account("lurker").await;
    let (guild, _) = fx.guild(owner.id).await;
    fx.join(guild.id, troll.id).await;
    let invite = invite_record("open", guild.id, owner.id, None, None, fx.tick());
    store.create_invite(&invite).await.unwrap();
    assert_eq!(store.member_count(guild.id).await.unwrap(), 2);

    let banned_at = fx.tick();
    store
        .ban(guild.id, troll.id, Some("spam"), owner.id, banned_at)
        .await
        .unwrap();
    assert_eq!(
        store.member(guild.id, troll.id).await.unwrap(),
        None,
        "ban removes the membership"
    );
    assert_eq!(store.member_count(guild.id).await.unwrap(), 1);
    assert!(store.is_banned(guild.id, troll.id).await.unwrap());
    assert!(!store.is_banned(guild.id, lurker.id).await.unwrap());
    let troll_ban = Ban {
        guild_id: guild.id,
        user: user(&troll),
        reason: Some("spam".to_owned()),
        created_at: banned_at,
    };
    assert_eq!(store.bans(guild.id).await.unwrap(), vec![troll_ban.clone()]);

    // Banning again is not an error and keeps one ban.
    store
        .ban(guild.id, troll.id, Some("more spam"), owner.id, fx.tick())
        .await
        .unwrap();
    assert_eq!(store.bans(guild.id).await.unwrap().len(), 1);

    // A ban also works on a non-member and blocks joining.
    let lurker_at = fx.tick();
    store
        .ban(guild.id, lurker.id, None, owner.id, lurker_at)
        .await
        .unwrap();
    let lurker_ban = Ban {
        guild_id: guild.id,
        user: user(&lurker),
        reason: None,
        created_at: lurker_at,
    };
    assert_eq!(store.bans(guild.id).await.unwrap()[1], lurker_ban);
    assert_eq!(
        store
            .accept_invite("open", troll.id, fx.tick())
            .await
            .unwrap(),
        Err(InviteRefusal::Banned)
    );
    assert_eq!(
        store
            .accept_invite("open", lurker.id, fx.tick())
            .await
            .unwrap(),
        Err(InviteRefusal::Banned)
    );
    assert_eq!(
        store.invite("open").await.unwrap().unwrap().uses,
        0,
        "refused accepts use nothing"
    );
    assert_eq!(store.member_count(guild.id).await.unwrap(), 1);

    assert!(store.unban(guild.id, troll.id).await.unwrap());
    assert!(
        !store.unban(guild.id, troll.id).await.unwrap(),
        "already unbanned"
    );
    assert!(!store.is_banned(guild.id, troll.id).await.unwrap());
    assert_eq!(store.bans(guild.id).await.unwrap(), vec![lurker_ban]);
    let accepted = store
        .accept_invite("open", troll.id, fx.tick())
        .await
        .unwrap()
        .expect("accept after unban");
    assert!(accepted.joined);
    assert_eq!(store.member_count(guild.id).await.unwrap(), 2);
}

async fn check_invites(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let owner = fx.account("owner").await;
    let [u1, u2, u3] = [
        fx.account("u1").await,
        fx.account("u2").await,
        fx.account("u3").await,
    ];
    let (guild, _) = fx.guild(owner.id).await;

    let limited = invite_record("two-uses", guild.id, owner.id, Some(2), None, fx.tick());
    store.create_invite(&limited).await.unwrap();
    let clash = invite_record("two-uses", guild.id, u1.id, None, None, fx.tick());
    assert_conflict(store.create_invite(&clash).await, "invite_code_taken");
    assert_eq!(
        store.invite("two-uses").await.unwrap(),
        Some(limited.clone())
    );
    assert_eq!(store.invite("nope").await.unwrap(), None);
    assert_eq!(
        store.accept_invite("nope", u1.id, fx.tick()).await.unwrap(),
        Err(InviteRefusal::Unknown)
    );

    let first = store
        .accept_invite("two-uses", u1.id, fx.tick())
        .await
        .unwrap()
        .expect("first use");
    assert_eq!(
        first,
        AcceptedInvite {
            guild: guild.clone(),
            joined: true
        }
    );
    assert_eq!(store.invite("two-uses").await.unwrap().unwrap().uses, 1);

    // Already a member: accepted, but the invite is not used.
    let again = store
        .accept_invite("two-uses", u1.id, fx.tick())
        .await
        .unwrap()
        .expect("member again");
    assert_eq!(
        again,
        AcceptedInvite {
            guild: guild.clone(),
            joined: false
        }
    );
    let owner_again = store
        .accept_invite("two-uses", owner.id, fx.tick())
        .await
        .unwrap()
        .expect("owner");
    assert!(!owner_again.joined);
    assert_eq!(store.invite("two-uses").await.unwrap().unwrap().uses, 1);

    assert!(
        store
            .accept_invite("two-uses", u2.id, fx.tick())
            .await
            .unwrap()
            .expect("second use")
            .joined
    );
    assert_eq!(
        store
            .accept_invite("two-uses", u3.id, fx.tick())
            .await
            .unwrap(),
        Err(InviteRefusal::UsedUp)
    );
    assert_eq!(store.invite("two-uses").await.unwrap().unwrap().uses, 2);
    assert_eq!(store.member(guild.id, u3.id).await.unwrap(), None);
    // A used-up invite still answers members.
    assert!(
        !store
            .accept_invite("two-uses", u2.id, fx.tick())
            .await
            .unwrap()
            .expect("member")
            .joined
    );

    // Expiry: valid strictly before expires_at.
    let expires_at = fx.clock + 100;
    let expiring = invite_record(
        "expiring",
        guild.id,
        owner.id,
        None,
        Some(expires_at),
        fx.tick(),
    );
    store.create_invite(&expiring).await.unwrap();
    assert_eq!(
        store
            .accept_invite("expiring", u3.id, expires_at)
            .await
            .unwrap(),
        Err(InviteRefusal::Expired)
    );
    assert!(
        store
            .accept_invite("expiring", u3.id, expires_at - 1)
            .await
            .unwrap()
            .expect("before expiry")
            .joined
    );

    let revoked = invite_record("revoked", guild.id, owner.id, None, None, fx.tick());
    store.create_invite(&revoked).await.unwrap();
    let (other_guild, _) = fx.guild(owner.id).await;
    assert!(
        !store
            .revoke_invite(other_guild.id, "revoked", fx.tick())
            .await
            .unwrap(),
        "wrong guild"
    );
    assert!(
        store
            .revoke_invite(guild.id, "revoked", fx.tick())
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_invite(guild.id, "revoked", fx.tick())
            .await
            .unwrap(),
        "already revoked"
    );
    assert!(
        !store
            .revoke_invite(guild.id, "nope", fx.tick())
            .await
            .unwrap()
    );
    assert!(store.invite("revoked").await.unwrap().unwrap().revoked);
    let newcomer = fx.account("newcomer").await;
    assert_eq!(
        store
            .accept_invite("revoked", newcomer.id, fx.tick())
            .await
            .unwrap(),
        Err(InviteRefusal::Revoked)
    );

    let listed: Vec<(String, i64, bool)> = store
        .invites(guild.id)
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.code, i.uses, i.revoked))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("two-uses".to_owned(), 2, false),
            ("expiring".to_owned(), 1, false),
            ("revoked".to_owned(), 0, true)
        ],
        "ordered by creation"
    );
    assert_eq!(store.invites(other_guild.id).await.unwrap(), vec![]);
    assert_eq!(store.member_count(guild.id).await.unwrap(), 4);
}

// ---------------------------------------------------------------------------------------------
// Messages

/// What `insert_message` should return for `new`.
fn expected_message(new: &NewMessage, guild_id: Option<Id>, seq: i64) -> Message {
    Message {
        id: new.id,
        channel_id: new.channel_id,
        guild_id,
        author: new.author,
        device: new.device.clone(),
        nonce: new.nonce.clone(),
        content: new.content.clone(),
        created_at: new.created_at,
        edited_at: None,
        seq,
        reply_to: new.reply_to,
        mentions: new.mentions.clone(),
        reactions: Vec::new(),
        deleted: false,
    }
}

async fn check_message_seq_and_idempotency(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let alice = fx.account("alice").await;
    let bob = fx.account("bob").await;
    let (guild, c1) = fx.guild(alice.id).await;
    let c2 = fx.channel(guild.id, "second", 1).await;

    let new1 = fx.new_message(c1.id, alice.id, "one");
    let m1 = fx.insert(&new1).await;
    assert_eq!(m1, expected_message(&new1, Some(guild.id), 1));
    let new2 = NewMessage {
        reply_to: Some(m1.id),
        mentions: vec![bob.id],
        ..fx.new_message(c1.id, alice.id, "two")
    };
    let m2 = fx.insert(&new2).await;
    assert_eq!(m2, expected_message(&new2, Some(guild.id), 2));
    let m3 = fx.post(c1.id, bob.id, "three").await;
    assert_eq!(m3.seq, 3);
    assert_eq!(
        fx.post(c2.id, alice.id, "other channel").await.seq,
        1,
        "seq is per channel"
    );

    // A retry with the same (author, nonce) returns the first message and takes no seq.
    let retry = NewMessage {
        nonce: new2.nonce.clone(),
        ..fx.new_message(c1.id, alice.id, "two, retried")
    };
    let again = store.insert_message(&retry).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.message, m2);
    assert_eq!(store.message(c1.id, retry.id).await.unwrap(), None);
    assert_eq!(fx.post(c1.id, alice.id, "four").await.seq, 4);

    // Nonces are per author.
    let bobs = NewMessage {
        nonce: new2.nonce.clone(),
        ..fx.new_message(c1.id, bob.id, "bob's own")
    };
    assert_eq!(fx.insert(&bobs).await.seq, 5);

    assert_eq!(store.channel(c1.id).await.unwrap().unwrap().last_seq, 5);
    assert_eq!(store.channel(c2.id).await.unwrap().unwrap().last_seq, 1);
    let events = store.events(c1.id, 0, 100).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert!(
        events
            .iter()
            .all(|e| e.kind == EventKind::MessageCreate && e.channel_id == c1.id)
    );
    assert_eq!(events[0].data, to_json(&m1));
    assert_eq!(events[1].data, to_json(&m2));
    assert_eq!(
        (events[1].message_id, events[1].created_at),
        (m2.id, m2.created_at)
    );

    assert_eq!(store.message(c1.id, m2.id).await.unwrap(), Some(m2.clone()));
    assert_eq!(
        store.message(c2.id, m2.id).await.unwrap(),
        None,
        "wrong channel"
    );
    let unknown_channel = fx.id();
    let nowhere = fx.new_message(unknown_channel, alice.id, "nowhere");
    assert_not_found(
        store.insert_message(&nowhere).await,
        "insert into unknown channel",
    );
}

async fn check_message_events(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let alice = fx.account("alice").await;
    let bob = fx.account("bob").await;
    let (guild, ch) = fx.guild(alice.id).await;
    let m1 = fx.post(ch.id, alice.id, "first").await;
    let m2 = fx.post(ch.id, alice.id, "second").await;

    let t = fx.tick();
    let ev = store
        .edit_message(ch.id, m1.id, "first, edited", &[bob.id], t)
        .await
        .unwrap();
    let edited = Message {
        content: "first, edited".to_owned(),
        mentions: vec![bob.id],
        edited_at: Some(t),
        ..m1.clone()
    };
    assert_eq!(
        (ev.seq, ev.kind, ev.message_id, ev.channel_id, ev.created_at),
        (3, EventKind::MessageUpdate, m1.id, ch.id, t)
    );
    // In an update event the message carries the update's own seq; stored, it keeps its first.
    assert_eq!(
        ev.data,
        to_json(&Message {
            seq: 3,
            ..edited.clone()
        })
    );
    assert_eq!(store.message(ch.id, m1.id).await.unwrap(), Some(edited));

    let reaction = |seq, user_id, emoji: &str| {
        to_json(&ReactionEvent {
            channel_id: ch.id,
            guild_id: Some(guild.id),
            message_id: m2.id,
            user_id,
            emoji: emoji.to_owned(),
            seq,
        })
    };
    let t = fx.tick();
    let ev = store
        .add_reaction(ch.id, m2.id, bob.id, "👍", t)
        .await
        .unwrap()
        .expect("new reaction");
    assert_eq!(
        (ev.seq, ev.kind, ev.message_id, ev.created_at),
        (4, EventKind::ReactionAdd, m2.id, t)
    );
    assert_eq!(ev.data, reaction(4, bob.id, "👍"));
    assert_eq!(
        store
            .add_reaction(ch.id, m2.id, bob.id, "👍", fx.tick())
            .await
            .unwrap(),
        None,
        "already there"
    );
    assert_eq!(
        store
            .add_reaction(ch.id, m2.id, alice.id, "👍", fx.tick())
            .await
            .unwrap()
            .unwrap()
            .seq,
        5
    );
    assert_eq!(
        store
            .add_reaction(ch.id, m2.id, bob.id, "🎉", fx.tick())
            .await
            .unwrap()
            .unwrap()
            .seq,
        6
    );
    let count = |emoji: &str, count| ReactionCount {
        emoji: emoji.to_owned(),
        count,
        me: false,
    };
    assert_eq!(
        store
            .message(ch.id, m2.id)
            .await
            .unwrap()
            .unwrap()
            .reactions,
        vec![count("👍", 2), count("🎉", 1)]
    );

    let ev = store
        .remove_reaction(ch.id, m2.id, bob.id, "👍", fx.tick())
        .await
        .unwrap()
        .expect("removed");
    assert_eq!((ev.seq, ev.kind), (7, EventKind::ReactionRemove));
    assert_eq!(ev.data, reaction(7, bob.id, "👍"));
    assert_eq!(
        store
            .remove_reaction(ch.id, m2.id, bob.id, "👍", fx.tick())
            .await
            .unwrap(),
        None,
        "already gone"
    );
    assert_eq!(
        store
            .message(ch.id, m2.id)
            .await
            .unwrap()
            .unwrap()
            .reactions,
        vec![count("👍", 1), count("🎉", 1)]
    );

    let t = fx.tick();
    let ev = store.delete_message(ch.id, m1.id, t).await.unwrap();
    assert_eq!(
        (ev.seq, ev.kind, ev.message_id, ev.created_at),
        (8, EventKind::MessageDelete, m1.id, t)
    );
    assert_eq!(
        ev.data,
        to_json(&MessageDeleted {
            id: m1.id,
            channel_id: ch.id,
            guild_id: Some(guild.id),
            seq: 8
        })
    );
    assert_eq!(store.channel(ch.id).await.unwrap().unwrap().last_seq, 8);

    let events = store.events(ch.id, 0, 100).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    use EventKind::*;
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            MessageCreate,
            MessageCreate,
            MessageUpdate,
            ReactionAdd,
            ReactionAdd,
            ReactionAdd,
            ReactionRemove,
            MessageDelete
        ]
    );
    assert_eq!(
        store
            .events(ch.id, 2, 3)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(store.events(ch.id, 8, 10).await.unwrap(), vec![]);

    // Catch-up no longer hands out the deleted content.
    for event in [&events[0], &events[2]] {
        assert_eq!(event.message_id, m1.id);
        assert_eq!(
            event.data["content"],
            json!(""),
            "seq {} not redacted: {}",
            event.seq,
            event.data
        );
        assert_eq!(event.data["mentions"], json!([]), "seq {}", event.seq);
        assert_eq!(event.data["deleted"], json!(true), "seq {}", event.seq);
        assert_eq!(event.data["id"], json!(m1.id.to_string()));
        assert_eq!(
            event.data["seq"],
            json!(event.seq),
            "redaction keeps each event's own seq"
        );
    }
    assert_eq!(
        events[1].data,
        to_json(&m2),
        "other messages' events are untouched"
    );

    assert_eq!(store.message(ch.id, m1.id).await.unwrap(), None);
    assert_eq!(
        ids(&store
            .history(ch.id, HistoryAnchor::Latest, 50)
            .await
            .unwrap()),
        vec![m2.id]
    );
    assert_not_found(
        store
            .edit_message(ch.id, m1.id, "zombie", &[], fx.tick())
            .await,
        "edit deleted",
    );
    assert_not_found(
        store.delete_message(ch.id, m1.id, fx.tick()).await,
        "delete twice",
    );
    assert_not_found(
        store
            .add_reaction(ch.id, m1.id, bob.id, "👍", fx.tick())
            .await,
        "react to deleted",
    );
    assert_not_found(
        store
            .edit_message(ch.id, fx.id(), "ghost", &[], fx.tick())
            .await,
        "edit unknown",
    );
    assert_not_found(
        store.delete_message(fx.id(), m2.id, fx.tick()).await,
        "delete via wrong channel",
    );
    assert_eq!(
        store.channel(ch.id).await.unwrap().unwrap().last_seq,
        8,
        "refused writes take no seq"
    );
}

async fn check_history(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let alice = fx.account("alice").await;
    let (guild, ch) = fx.guild(alice.id).await;
    let other = fx.channel(guild.id, "other", 1).await;
    let mut m = Vec::new();
    for i in 0..10 {
        m.push(fx.post(ch.id, alice.id, &format!("message {i}")).await);
        fx.post(other.id, alice.id, "noise").await;
    }
    let id = |i: usize| m[i].id;
    let range = |r: std::ops::Range<usize>| m[r].iter().map(|x| x.id).collect::<Vec<_>>();
    let h = |anchor, limit| async move { ids(&store.history(ch.id, anchor, limit).await.unwrap()) };

    assert_eq!(h(HistoryAnchor::Latest, 3).await, range(7..10));
    assert_eq!(h(HistoryAnchor::Latest, 50).await, range(0..10));
    assert_eq!(h(HistoryAnchor::Latest, 0).await, vec![]);
    assert_eq!(h(HistoryAnchor::Before(id(5)), 3).await, range(2..5));
    assert_eq!(h(HistoryAnchor::Before(id(1)), 5).await, range(0..1));
    assert_eq!(h(HistoryAnchor::Before(id(0)), 5).await, vec![]);
    assert_eq!(h(HistoryAnchor::After(id(5)), 3).await, range(6..9));
    assert_eq!(h(HistoryAnchor::After(id(0)), 50).await, range(1..10));
    assert_eq!(h(HistoryAnchor::After(id(9)), 3).await, vec![]);
    // Around: limit/2 older, the rest from the anchor on.
    assert_eq!(h(HistoryAnchor::Around(id(5)), 4).await, range(3..7));
    assert_eq!(h(HistoryAnchor::Around(id(5)), 5).await, range(3..8));
    assert_eq!(h(HistoryAnchor::Around(id(5)), 1).await, range(5..6));
    assert_eq!(h(HistoryAnchor::Around(id(0)), 4).await, range(0..2));
    assert_eq!(h(HistoryAnchor::Around(id(9)), 4).await, range(7..10));

    // Full messages, with reactions.
    store
        .add_reaction(ch.id, id(9), alice.id, "👀", fx.tick())
        .await
        .unwrap();
    let latest = store
        .history(ch.id, HistoryAnchor::Latest, 2)
        .await
        .unwrap();
    assert_eq!(latest[0], m[8]);
    assert_eq!(
        latest[1].reactions,
        vec![ReactionCount {
            emoji: "👀".to_owned(),
            count: 1,
            me: false,
        }]
    );

    store.delete_message(ch.id, id(6), fx.tick()).await.unwrap();
    assert_eq!(
        h(HistoryAnchor::After(id(5)), 3).await,
        range(7..10),
        "deleted messages are skipped"
    );
    assert_eq!(h(HistoryAnchor::Latest, 50).await.len(), 9);
    assert_eq!(h(HistoryAnchor::Around(id(6)), 2).await, vec![id(5), id(7)]);
}

async fn check_read_states(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let me = fx.account("me").await;
    let other = fx.account("other").await;
    let third = fx.account("third").await;
    let (guild, c1) = fx.guild(me.id).await;
    let c2 = fx.channel(guild.id, "quiet", 1).await;

    let o1 = fx.post(c1.id, other.id, "hi").await;
    let o2 = fx
        .post_mentioning(c1.id, other.id, "hi @me", &[me.id])
        .await;
    let o3 = fx
        .post_mentioning(c1.id, other.id, "hi @third", &[third.id])
        .await;
    fx.post_mentioning(c1.id, me.id, "my own, mentioning myself", &[me.id])
        .await;
    let o4 = fx
        .post_mentioning(c1.id, other.id, "hi both", &[third.id, me.id])
        .await;
    let _ = o1;

    let state = |channel_id, last_read_id, unread_count, mention_count| ReadState {
        channel_id,
        last_read_id,
        unread_count,
        mention_count,
    };
    // Own messages never count; ordered by channel id whatever the request order.
    assert_eq!(
        store.read_states(me.id, &[c2.id, c1.id]).await.unwrap(),
        vec![state(c1.id, None, 4, 2), state(c2.id, None, 0, 0)]
    );

    store.ack(me.id, c1.id, o2.id).await.unwrap();
    assert_eq!(
        store.read_states(me.id, &[c1.id]).await.unwrap(),
        vec![state(c1.id, Some(o2.id), 2, 1)]
    );

    store.delete_message(c1.id, o4.id, fx.tick()).await.unwrap();
    assert_eq!(
        store.read_states(me.id, &[c1.id]).await.unwrap(),
        vec![state(c1.id, Some(o2.id), 1, 0)],
        "deleted messages"
    );

    store.ack(me.id, c1.id, o3.id).await.unwrap();
    assert_eq!(
        store.read_states(me.id, &[c1.id]).await.unwrap(),
        vec![state(c1.id, Some(o3.id), 0, 0)],
        "ack moves"
    );

    // Each reader has their own state.
    assert_eq!(
        store.read_states(third.id, &[c1.id]).await.unwrap(),
        vec![state(c1.id, None, 4, 1)]
    );
    assert_eq!(store.read_states(me.id, &[]).await.unwrap(), vec![]);
    assert_eq!(
        store.read_states(me.id, &[fx.id()]).await.unwrap(),
        vec![],
        "unknown channels are left out"
    );
}

async fn check_unread_cap(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let me = fx.account("me").await;
    let other = fx.account("other").await;
    let (_, ch) = fx.guild(me.id).await;
    for i in 0..1_001 {
        fx.post_mentioning(ch.id, other.id, &format!("ping {i}"), &[me.id])
            .await;
    }
    let state = store.read_states(me.id, &[ch.id]).await.unwrap();
    assert_eq!(
        (state[0].unread_count, state[0].mention_count),
        (1_000, 1_000),
        "counts stop at 1,000"
    );
}

/// Opens several write connections up front: against a cold pool, racing requests would
/// mostly queue behind connection setup and never overlap.
async fn warm_up(store: &dyn Store, guild_id: Id) {
    for r in join_all((0..8).map(|_| store.guild(guild_id))).await {
        r.unwrap();
    }
}

/// Concurrent writers to one channel still get a gapless seq.
async fn check_concurrent_sequencing(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let alice = fx.account("alice").await;
    let (guild, ch) = fx.guild(alice.id).await;
    warm_up(store, guild.id).await;

    let burst: Vec<NewMessage> = (0..16)
        .map(|i| fx.new_message(ch.id, alice.id, &format!("burst {i}")))
        .collect();
    let seqs: BTreeSet<i64> = join_all(burst.iter().map(|m| store.insert_message(m)))
        .await
        .into_iter()
        .map(|r| r.unwrap().message.seq)
        .collect();
    assert_eq!(seqs, (1..=16).collect());

    // Retries of one nonce racing each other: one message, one seq.
    let first = fx.new_message(ch.id, alice.id, "retried");
    let retries: Vec<NewMessage> = (0..8)
        .map(|_| NewMessage {
            id: fx.id(),
            ..first.clone()
        })
        .collect();
    let results: Vec<_> = join_all(retries.iter().map(|m| store.insert_message(m)))
        .await
        .into_iter()
        .map(|r| r.expect("concurrent retry"))
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.created).count(),
        1,
        "exactly one retry creates"
    );
    let winner = &results.iter().find(|r| r.created).unwrap().message;
    assert_eq!(winner.seq, 17);
    assert!(
        results.iter().all(|r| r.message == *winner),
        "every retry returns the winner"
    );

    // Reactions by ten users at once, plus the same reaction five times.
    let users: Vec<Id> = (0..10).map(|_| fx.id()).collect();
    let now = fx.tick();
    let added = join_all(
        users
            .iter()
            .map(|u| store.add_reaction(ch.id, winner.id, *u, "🔥", now)),
    )
    .await;
    let seqs: BTreeSet<i64> = added
        .into_iter()
        .map(|r| r.unwrap().expect("new reaction").seq)
        .collect();
    assert_eq!(seqs, (18..=27).collect());
    let same =
        join_all((0..5).map(|_| store.add_reaction(ch.id, winner.id, alice.id, "👍", now))).await;
    assert_eq!(
        same.into_iter()
            .map(|r| r.unwrap())
            .filter(Option::is_some)
            .count(),
        1
    );

    assert_eq!(store.channel(ch.id).await.unwrap().unwrap().last_seq, 28);
    let events = store.events(ch.id, 0, 100).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=28).collect::<Vec<_>>()
    );
}

/// Concurrent sends to several channels share transactions (group commit): every channel's
/// seq stays gapless, each message's event carries it, and a send to an unknown channel fails
/// alone.
async fn check_group_commit(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let alice = fx.account("alice").await;
    let (guild, first) = fx.guild(alice.id).await;
    warm_up(store, guild.id).await;
    let second = fx.channel(guild.id, "second", 2).await;
    let third = fx.channel(guild.id, "third", 3).await;
    let channels = [first.id, second.id, third.id];
    let mut sends: Vec<NewMessage> = (0..60)
        .map(|i| fx.new_message(channels[i % 3], alice.id, &format!("batched {i}")))
        .collect();
    sends.insert(30, fx.new_message(Id(424_242), alice.id, "nowhere"));
    let results = join_all(sends.iter().map(|m| store.insert_message(m))).await;
    assert!(
        matches!(results[30], Err(StoreError::NotFound)),
        "{:?}",
        results[30]
    );
    for channel in channels {
        let seqs: BTreeSet<i64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter(|r| r.message.channel_id == channel)
            .map(|r| {
                assert!(r.created);
                r.message.seq
            })
            .collect();
        assert_eq!(seqs, (1..=20).collect(), "channel {channel}");
        let events = store.events(channel, 0, 100).await.unwrap();
        assert_eq!(events.len(), 20);
        for e in events {
            let m: Message = serde_json::from_value(e.data).unwrap();
            assert_eq!(
                (m.seq, m.channel_id, e.kind),
                (e.seq, channel, EventKind::MessageCreate)
            );
            assert_eq!(e.message_id, m.id);
        }
    }
}

/// Racing requests that must each win once: leases, invite uses, joins, DMs, refreshes.
async fn check_concurrent_uniqueness(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let owner = fx.account("owner").await;
    let mut users = Vec::new();
    for i in 0..5 {
        users.push(fx.account(&format!("user{i}")).await);
    }
    let (guild, _) = fx.guild(owner.id).await;
    warm_up(store, guild.id).await;

    let holders: Vec<String> = (0..8).map(|i| format!("holder-{i}")).collect();
    let leased: BTreeSet<u16> =
        join_all(holders.iter().map(|h| store.lease_worker_id(h, T0, 60_000)))
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
    assert_eq!(leased, (0..8).collect(), "distinct worker ids");

    let invite = invite_record("three", guild.id, owner.id, Some(3), None, fx.tick());
    store.create_invite(&invite).await.unwrap();
    let now = fx.tick();
    let accepted = join_all(
        users
            .iter()
            .map(|u| store.accept_invite("three", u.id, now)),
    )
    .await;
    let accepted: Vec<_> = accepted
        .into_iter()
        .map(|r| r.expect("accept_invite"))
        .collect();
    assert_eq!(
        accepted
            .iter()
            .filter(|r| matches!(r, Ok(a) if a.joined))
            .count(),
        3,
        "{accepted:?}"
    );
    assert_eq!(
        accepted
            .iter()
            .filter(|r| **r == Err(InviteRefusal::UsedUp))
            .count(),
        2,
        "{accepted:?}"
    );
    assert_eq!(store.invite("three").await.unwrap().unwrap().uses, 3);
    assert_eq!(store.member_count(guild.id).await.unwrap(), 4);

    // One user double-clicking an invite: one join, one "already a member", no error.
    let open = invite_record("open", guild.id, owner.id, None, None, fx.tick());
    store.create_invite(&open).await.unwrap();
    let late = fx.account("late").await;
    let now = fx.tick();
    let (first, second) = futures_util::join!(
        store.accept_invite("open", late.id, now),
        store.accept_invite("open", late.id, now)
    );
    let mut joined: Vec<bool> = [first, second]
        .into_iter()
        .map(|r| {
            r.expect("double accept must not fail")
                .expect("accepted")
                .joined
        })
        .collect();
    joined.sort();
    assert_eq!(joined, vec![false, true]);
    assert_eq!(store.invite("open").await.unwrap().unwrap().uses, 1);

    // Both sides opening the same DM at once end up in one channel.
    let (a, b) = (users[0].id, users[1].id);
    let (dm1, dm2) = (dm_channel(fx.id()), dm_channel(fx.id()));
    let (x, y) = futures_util::join!(store.open_dm(&dm1, a, b), store.open_dm(&dm2, b, a));
    assert_eq!(x.unwrap().id, y.unwrap().id);
    assert_eq!(store.dm_channels(a).await.unwrap().len(), 1);

    // One refresh token presented twice at once: one rotation, one grace answer.
    let session = session_record(fx.id(), owner.id, &device_key("owner"), fx.clock);
    store.create_session(&session, "r1").await.unwrap();
    let now = fx.tick();
    let (x, y) = futures_util::join!(
        store.rotate_refresh("r1", "r2a", now, 5_000, IDLE),
        store.rotate_refresh("r1", "r2b", now, 5_000, IDLE)
    );
    let mut outcomes = [x.unwrap(), y.unwrap()].map(|o| match o {
        RefreshOutcome::Rotated(_) => "rotated",
        RefreshOutcome::Grace(_) => "grace",
        RefreshOutcome::Reused(_) => "reused",
        RefreshOutcome::Invalid => "invalid",
    });
    outcomes.sort();
    assert_eq!(outcomes, ["grace", "rotated"]);
    assert_eq!(
        store.session(session.id).await.unwrap().unwrap().revoked_at,
        None
    );
}

fn search_params(channel_ids: &[Id], terms: &[&str]) -> SearchParams {
    SearchParams {
        channel_ids: channel_ids.to_vec(),
        terms: terms.iter().map(|t| (*t).to_owned()).collect(),
        author: None,
        before: None,
        after: None,
        limit: 50,
    }
}

async fn search_ids(store: &dyn Store, params: &SearchParams) -> BTreeSet<Id> {
    store
        .search(params)
        .await
        .unwrap()
        .iter()
        .map(|h| h.message.id)
        .collect()
}

async fn check_search(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let a = fx.account("a").await;
    let b = fx.account("b").await;
    let (guild, c1) = fx.guild(a.id).await;
    let c2 = fx.channel(guild.id, "two", 1).await;
    let s1 = fx.post(c1.id, a.id, "hello world").await;
    let s2 = fx.post(c1.id, b.id, "Hello there, worldly friend").await;
    let s3 = fx.post(c2.id, a.id, "goodbye world").await;
    let s4 = fx.post(c1.id, a.id, "<b>HELLO</b> & 'world'").await;
    let s5 = fx.post(c1.id, a.id, "hello world, soon deleted").await;
    let s6 = fx.post(c1.id, b.id, "hello planet").await;
    store.delete_message(c1.id, s5.id, fx.tick()).await.unwrap();
    store
        .edit_message(c1.id, s6.id, "greetings planet", &[], fx.tick())
        .await
        .unwrap();
    let both = [c1.id, c2.id];
    let set = |ms: &[&Message]| ms.iter().map(|m| m.id).collect::<BTreeSet<_>>();

    // Terms are AND-ed; only the last one matches as a prefix (world* ~ worldly).
    assert_eq!(
        search_ids(store, &search_params(&both, &["hello", "world"])).await,
        set(&[&s1, &s2, &s4])
    );
    assert_eq!(
        search_ids(store, &search_params(&both, &["world", "hello"])).await,
        set(&[&s1, &s4])
    );
    assert_eq!(
        search_ids(store, &search_params(&both, &["world"])).await,
        set(&[&s1, &s2, &s3, &s4])
    );
    assert_eq!(
        search_ids(store, &search_params(&both, &["wor", "hello"])).await,
        set(&[]),
        "non-last terms are whole words"
    );

    // Filters.
    assert_eq!(
        search_ids(store, &search_params(&[c2.id], &["world"])).await,
        set(&[&s3])
    );
    assert_eq!(
        search_ids(store, &search_params(&[c1.id], &["goodbye"])).await,
        set(&[])
    );
    let by_b = SearchParams {
        author: Some(b.id),
        ..search_params(&both, &["hello"])
    };
    assert_eq!(search_ids(store, &by_b).await, set(&[&s2]));
    let before = SearchParams {
        before: Some(s4.id),
        ..search_params(&both, &["hello"])
    };
    assert_eq!(search_ids(store, &before).await, set(&[&s1, &s2]));
    let after = SearchParams {
        after: Some(s1.id),
        ..search_params(&both, &["hello"])
    };
    assert_eq!(search_ids(store, &after).await, set(&[&s2, &s4]));
    let between = SearchParams {
        after: Some(s1.id),
        before: Some(s4.id),
        ..search_params(&both, &["hello"])
    };
    assert_eq!(search_ids(store, &between).await, set(&[&s2]));
    let limited = SearchParams {
        limit: 2,
        ..search_params(&both, &["hello"])
    };
    assert_eq!(store.search(&limited).await.unwrap().len(), 2);
    assert!(
        store
            .search(&search_params(&[], &["hello"]))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .search(&search_params(&both, &[]))
            .await
            .unwrap()
            .is_empty()
    );

    // Deleted and edited content is out of the index.
    assert_eq!(
        search_ids(store, &search_params(&both, &["soon"])).await,
        set(&[])
    );
    assert_eq!(
        search_ids(store, &search_params(&both, &["hello"])).await,
        set(&[&s1, &s2, &s4])
    );
    assert_eq!(
        search_ids(store, &search_params(&both, &["greetings"])).await,
        set(&[&s6])
    );

    // Hits carry the stored message, a score order and an escaped highlight.
    let hits = store
        .search(&search_params(&both, &["hello", "world"]))
        .await
        .unwrap();
    for hit in &hits {
        assert_eq!(
            Some(&hit.message),
            store
                .message(hit.message.channel_id, hit.message.id)
                .await
                .unwrap()
                .as_ref()
        );
        assert!(hit.score.is_finite(), "score {}", hit.score);
    }
    assert!(
        hits.windows(2).all(|w| w[0].score >= w[1].score),
        "ordered by score"
    );
    let highlight = |id: Id| {
        hits.iter()
            .find(|h| h.message.id == id)
            .map(|h| h.highlight.clone())
            .unwrap()
    };
    assert_eq!(highlight(s1.id), "<mark>hello</mark> <mark>world</mark>");
    assert_eq!(
        highlight(s2.id),
        "<mark>Hello</mark> there, <mark>worldly</mark> friend"
    );
    assert_eq!(
        highlight(s4.id),
        "&lt;b&gt;<mark>HELLO</mark>&lt;/b&gt; &amp; &#39;<mark>world</mark>&#39;"
    );
}

// ---------------------------------------------------------------------------------------------
// Search parity: the same corpus and queries must hit the same messages on both backends.

const PARITY_CORPUS: &[&str] = &[
    "The café opens at nine",
    "Cafe prices went up again",
    "CAFÉ SOCIETY meets tonight",
    "Meet me at the well-known spot",
    "The well is deep",
    "known issues: none",
    "e-mail me the report",
    "Email is down again!",
    "Résumé attached, see page 2",
    "resume the download please",
    "Hello, world!",
    "hello-world is the classic first program",
    "HELLO WORLD IN CAPS",
    "worldwide release on Friday",
    "Friday's release notes",
    "don't panic",
    "dont forget the towel",
    "naïve approach works",
    "naive bayes classifier",
    "Über cool",
    "deploy v2 to prod",
    "version 2 is out",
    "ask user@example.com for access",
    "ship it: 100% done",
    "Straße closed due to works",
    "strasse renamed",
    "rock'n'roll never dies",
    "co-operate with the co-op",
    "cooperate nicely",
    "snake_case_identifier here",
    "日本語 text here",
    "to be or not to be",
    "docs at https://docs.example.org/guide",
    "binary in /usr/local/bin",
    "pi is 3.14 roughly",
    "release 1.2.3 shipped",
    "call foo.bar twice",
];

const PARITY_QUERIES: &[&str] = &[
    "café",
    "caf",
    "cafe",
    "hello world",
    "well",
    "known",
    "e mail",
    "email",
    "résumé",
    "resume",
    "friday release",
    "don't",
    "naïve",
    "über",
    "co op",
    "straße",
    "case",
    "v2",
    "example",
    "here",
    "日本語",
    "or not",
    "docs",
    "usr",
    "14",
    "shipped 2",
    "bar",
];

/// For each query, the contents of the hits.
async fn run_parity_corpus(store: &dyn Store) -> Vec<BTreeSet<String>> {
    let mut fx = Fx::new(store);
    let author = fx.account("author").await;
    let (_, ch) = fx.guild(author.id).await;
    for content in PARITY_CORPUS {
        fx.post(ch.id, author.id, content).await;
    }
    let mut results = Vec::new();
    for query in PARITY_QUERIES {
        let terms = search_terms(query).unwrap_or_else(|e| panic!("query {query:?}: {e:?}"));
        let params = SearchParams {
            terms,
            ..search_params(&[ch.id], &[])
        };
        let hits = store
            .search(&params)
            .await
            .unwrap_or_else(|e| panic!("{:?} query {query:?}: {e}", store.backend()));
        results.push(hits.into_iter().map(|h| h.message.content).collect());
    }
    results
}

#[tokio::test]
async fn search_hits_match_across_backends() {
    let (sqlite, _dir) = common::db::sqlite_store().await;
    let postgres = common::db::postgres_store().await;
    let on_sqlite = run_parity_corpus(&*sqlite).await;
    let on_postgres = run_parity_corpus(&*postgres).await;

    let mut differences = String::new();
    for ((query, lite), pg) in PARITY_QUERIES.iter().zip(&on_sqlite).zip(&on_postgres) {
        assert!(
            !lite.is_empty() || !pg.is_empty(),
            "query {query:?} hits nothing on either backend: a useless probe"
        );
        if lite != pg {
            differences.push_str(&format!(
                "\n  {query:?}: only sqlite {:?}, only postgres {:?}",
                lite.difference(pg).collect::<Vec<_>>(),
                pg.difference(lite).collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "search hits differ between backends:{differences}"
    );
}

/// `channel_seqs` reads the live counters, which cached channel objects do not follow.
async fn check_channel_seqs(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let ana = fx.account("ana").await;
    let (guild, general) = fx.guild(ana.id).await;
    let other = fx.channel(guild.id, "other", 1).await;
    for i in 0..3 {
        fx.post(general.id, ana.id, &format!("m{i}")).await;
    }
    fx.post(other.id, ana.id, "x").await;
    let mut seqs = store
        .channel_seqs(&[other.id, general.id, Id(424242)])
        .await
        .unwrap();
    seqs.sort();
    let mut expected = vec![(general.id, 3), (other.id, 1)];
    expected.sort();
    assert_eq!(seqs, expected);
    assert!(store.channel_seqs(&[]).await.unwrap().is_empty());
}

/// A refresh token left unused longer than the idle limit no longer rotates.
async fn check_refresh_idle_expiry(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let ana = fx.account("ana").await;
    let session = session_record(fx.id(), ana.id, &device_key("ana"), fx.clock);
    store.create_session(&session, "idle-1").await.unwrap();
    let idle = 60_000;
    assert_eq!(
        store
            .rotate_refresh(
                "idle-1",
                "idle-2",
                session.created_at + idle + 1,
                5_000,
                idle
            )
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    // Within the limit it rotates, and the successor's clock starts at the rotation.
    let t = session.created_at + idle;
    assert_eq!(
        store
            .rotate_refresh("idle-1", "idle-2", t, 5_000, idle)
            .await
            .unwrap(),
        RefreshOutcome::Rotated(session.clone())
    );
    assert_eq!(
        store
            .rotate_refresh("idle-2", "idle-3", t + idle, 5_000, idle)
            .await
            .unwrap(),
        RefreshOutcome::Rotated(session)
    );
}

async fn check_moderation(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let owner = fx.account("owner").await;
    let member = fx.account("member").await;
    let (guild, general) = fx.guild(owner.id).await;
    let other = fx.channel(guild.id, "other", 1).await;
    fx.join(guild.id, member.id).await;

    // The guild audit log: newest first, filtered by action, paged by id.
    let mut entries = Vec::new();
    for (i, action) in ["member_kick", "member_ban", "member_kick"]
        .into_iter()
        .enumerate()
    {
        let e = AuditEntry {
            id: fx.id(),
            actor_id: Some(owner.id),
            action: action.to_owned(),
            target_id: (i != 1).then_some(member.id),
            detail: format!("entry {i}"),
            created_at: fx.tick(),
        };
        store.add_guild_audit(guild.id, &e).await.unwrap();
        entries.push(e);
    }
    let all = store.guild_audit(guild.id, None, None, 50).await.unwrap();
    assert_eq!(all, entries.iter().rev().cloned().collect::<Vec<_>>());
    let kicks = store
        .guild_audit(guild.id, Some("member_kick"), None, 50)
        .await
        .unwrap();
    assert_eq!(kicks.len(), 2);
    assert_eq!(
        store
            .guild_audit(guild.id, None, Some(entries[2].id), 1)
            .await
            .unwrap(),
        vec![entries[1].clone()]
    );
    let (elsewhere, _) = fx.guild(member.id).await;
    assert!(
        store
            .guild_audit(elsewhere.id, None, None, 50)
            .await
            .unwrap()
            .is_empty()
    );
    // Retention deletes what is older than the cut, in both logs.
    assert_eq!(store.purge_audit(entries[1].created_at).await.unwrap(), 1);
    assert_eq!(
        store
            .guild_audit(guild.id, None, None, 50)
            .await
            .unwrap()
            .len(),
        2
    );

    // Timeouts live on the membership.
    let until = fx.clock + 60_000;
    assert!(
        store
            .set_timeout(guild.id, member.id, Some(until))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .member(guild.id, member.id)
            .await
            .unwrap()
            .unwrap()
            .timeout_until,
        Some(until)
    );
    assert!(store.set_timeout(guild.id, member.id, None).await.unwrap());
    assert_eq!(
        store
            .member(guild.id, member.id)
            .await
            .unwrap()
            .unwrap()
            .timeout_until,
        None
    );
    assert!(
        !store
            .set_timeout(guild.id, Id(424242), Some(until))
            .await
            .unwrap()
    );

    // Slow mode reads a member's newest message in a channel since a point in time.
    let since = Id::from_unix_ms(fx.clock);
    assert_eq!(
        store
            .latest_message_by(general.id, member.id, since)
            .await
            .unwrap(),
        None
    );
    let first = fx.post(general.id, member.id, "one").await;
    let second = fx.post(general.id, member.id, "two").await;
    fx.post(other.id, member.id, "three").await;
    fx.post(general.id, owner.id, "owner's").await;
    assert_eq!(
        store
            .latest_message_by(general.id, member.id, since)
            .await
            .unwrap(),
        Some((second.nonce.clone(), second.created_at))
    );
    let later = Id::from_unix_ms(fx.clock + 1);
    assert_eq!(
        store
            .latest_message_by(general.id, member.id, later)
            .await
            .unwrap(),
        None
    );

    // A member's live messages, newest first, in one guild or anywhere.
    let live = store
        .live_messages_by(member.id, Some(guild.id), since, 10)
        .await
        .unwrap();
    assert_eq!(live.len(), 3);
    assert_eq!(live[2], (general.id, first.id));
    store
        .delete_message(general.id, first.id, fx.tick())
        .await
        .unwrap();
    let live = store
        .live_messages_by(member.id, Some(guild.id), since, 10)
        .await
        .unwrap();
    assert_eq!(live.len(), 2, "deleted messages are not live");
    assert_eq!(
        store
            .live_messages_by(member.id, Some(guild.id), since, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .live_messages_by(member.id, Some(elsewhere.id), since, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .live_messages_by(member.id, None, Id(0), 10)
            .await
            .unwrap()
            .len(),
        2
    );

    // Slow mode is a channel setting.
    let updated = store
        .update_channel(
            general.id,
            &ChannelUpdate {
                slowmode_secs: Some(30),
                ..ChannelUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.slowmode_secs, 30);
    assert_eq!(
        store
            .channel(general.id)
            .await
            .unwrap()
            .unwrap()
            .slowmode_secs,
        30
    );

    // Handing a guild over: only to a member.
    assert_not_found(
        store.transfer_guild(guild.id, Id(424242)).await,
        "non-member owner",
    );
    let moved = store.transfer_guild(guild.id, member.id).await.unwrap();
    assert_eq!(moved.owner_id, member.id);
    assert_eq!(store.owned_guilds(member.id).await.unwrap(), {
        let mut ids = vec![guild.id, elsewhere.id];
        ids.sort();
        ids
    });
    assert!(store.owned_guilds(owner.id).await.unwrap().is_empty());
}

fn report(id: Id, guild: Option<Id>, reporter: Id, user: Id, at: i64) -> Report {
    Report {
        id,
        guild_id: guild,
        reporter_id: reporter,
        user_id: user,
        channel_id: None,
        message_id: None,
        message_content: Some("the words".into()),
        reason: "why".into(),
        status: "open".into(),
        action: None,
        handled_by: None,
        handled_at: None,
        created_at: at,
    }
}

async fn check_reports(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let owner = fx.account("owner").await;
    let member = fx.account("member").await;
    let (guild, _) = fx.guild(owner.id).await;
    let r1 = report(fx.id(), Some(guild.id), member.id, owner.id, fx.tick());
    let r2 = report(fx.id(), Some(guild.id), owner.id, member.id, fx.tick());
    let r3 = report(fx.id(), None, member.id, owner.id, fx.tick());
    for r in [&r1, &r2, &r3] {
        store.create_report(r).await.unwrap();
    }
    assert_eq!(store.report(r1.id).await.unwrap(), Some(r1.clone()));
    assert_eq!(
        store
            .reports(Some(guild.id), Some("open"), None, 50)
            .await
            .unwrap(),
        vec![r2.clone(), r1.clone()]
    );
    assert_eq!(
        store.reports(None, None, None, 50).await.unwrap(),
        vec![r3.clone()]
    );
    assert_eq!(
        store
            .reports(Some(guild.id), None, Some(r2.id), 50)
            .await
            .unwrap(),
        vec![r1.clone()]
    );

    let at = fx.tick();
    let closed = store
        .handle_report(r1.id, "resolved", "deleted it", owner.id, at)
        .await
        .unwrap();
    assert_eq!(
        closed,
        Report {
            status: "resolved".into(),
            action: Some("deleted it".into()),
            handled_by: Some(owner.id),
            handled_at: Some(at),
            ..r1.clone()
        }
    );
    assert_conflict(
        store
            .handle_report(r1.id, "dismissed", "", owner.id, at)
            .await,
        "report_closed",
    );
    assert_not_found(
        store
            .handle_report(Id(424242), "dismissed", "", owner.id, at)
            .await,
        "unknown report",
    );
    assert_eq!(
        store
            .reports(Some(guild.id), Some("open"), None, 50)
            .await
            .unwrap(),
        vec![r2.clone()]
    );
    assert_eq!(
        store
            .reports(Some(guild.id), Some("resolved"), None, 50)
            .await
            .unwrap(),
        vec![closed]
    );
    // A guild's reports go with it.
    store.delete_guild(guild.id).await.unwrap();
    assert_eq!(store.report(r2.id).await.unwrap(), None);
    assert!(store.report(r3.id).await.unwrap().is_some());
}

async fn check_account_deletion(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let owner = fx.account("owner").await;
    let leaver = fx.account("leaver").await;
    let (guild, general) = fx.guild(owner.id).await;
    fx.join(guild.id, leaver.id).await;
    let said = fx.post(general.id, leaver.id, "kept").await;
    store
        .add_reaction(general.id, said.id, leaver.id, "👍", fx.tick())
        .await
        .unwrap();
    let session = session_record(fx.id(), leaver.id, &device_key("leaver"), fx.tick());
    store
        .create_session(&session, "refresh-hash")
        .await
        .unwrap();

    // An owner must hand over first.
    assert_conflict(
        store.delete_account(owner.id, fx.tick()).await,
        "owns_guilds",
    );
    let deleted = store.delete_account(leaver.id, fx.tick()).await.unwrap();
    assert_eq!(deleted.sessions, vec![session.id]);
    assert_eq!(deleted.guilds, vec![guild.id]);
    let account = store.account(leaver.id).await.unwrap().unwrap();
    assert_eq!(account.username, format!("deleted-{}", leaver.id.0));
    assert!(
        store
            .account_by_key(&leaver.account_key)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.devices(leaver.id).await.unwrap().is_empty());
    assert!(
        store
            .session(session.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    assert_eq!(store.member(guild.id, leaver.id).await.unwrap(), None);
    let kept = store.message(general.id, said.id).await.unwrap().unwrap();
    assert_eq!(kept.content, "kept");
    assert!(kept.reactions.is_empty(), "reactions are personal data");
    // The name is free again; deleting twice is unknown.
    fx.account("leaver").await;
    assert_not_found(
        store.delete_account(leaver.id, fx.tick()).await,
        "deleted account",
    );
}

async fn check_instance_invites(store: &dyn Store) {
    let mut fx = Fx::new(store);
    let admin = fx.account("admin").await;
    let invite = |code: &str, max_uses, expires_at, at| InstanceInvite {
        code: code.to_owned(),
        created_by: admin.id,
        max_uses,
        uses: 0,
        expires_at,
        revoked: false,
        created_at: at,
    };
    let once = invite("once", Some(1), None, fx.tick());
    let timed = invite("timed", None, Some(fx.clock + 10), fx.tick());
    store.create_instance_invite(&once).await.unwrap();
    store.create_instance_invite(&timed).await.unwrap();
    assert_conflict(
        store.create_instance_invite(&once).await,
        "invite_code_taken",
    );
    assert_eq!(
        store.instance_invite("once").await.unwrap(),
        Some(once.clone())
    );
    assert_eq!(
        store.instance_invites().await.unwrap(),
        vec![timed.clone(), once.clone()]
    );
    let now = fx.tick();
    assert_eq!(
        store.use_instance_invite("once", now).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        store.use_instance_invite("once", now).await.unwrap(),
        Err(InviteRefusal::UsedUp)
    );
    assert_eq!(
        store.instance_invite("once").await.unwrap().unwrap().uses,
        1
    );
    assert_eq!(
        store
            .use_instance_invite("timed", fx.clock + 10)
            .await
            .unwrap(),
        Err(InviteRefusal::Expired)
    );
    assert_eq!(
        store.use_instance_invite("nosuch", now).await.unwrap(),
        Err(InviteRefusal::Unknown)
    );
    assert!(store.revoke_instance_invite("timed", now).await.unwrap());
    assert!(!store.revoke_instance_invite("nosuch", now).await.unwrap());
    assert_eq!(
        store.use_instance_invite("timed", now).await.unwrap(),
        Err(InviteRefusal::Revoked)
    );
}
