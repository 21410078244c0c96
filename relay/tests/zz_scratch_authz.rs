mod common;
use common::client::{Backend, TestRelay};
use concord_proto::{Id, Permissions};
use serde_json::{Value, json};
fn id(v: &Value) -> Id { serde_json::from_value(v.clone()).unwrap() }

#[tokio::test]
async fn scratch() {
    let relay = TestRelay::start(Backend::Sqlite).await;
    let owner = relay.register("owner").await;
    let mod_ = relay.register("moder").await;
    let adm = relay.register("adm").await;
    let (g, general) = owner.create_guild("g").await;
    let role = |n: &str, p: Permissions| json!({"name": n, "permissions": p});
    let admins = id(&owner.post(&format!("/api/v1/guilds/{g}/roles"), role("admins", Permissions::ADMINISTRATOR)).await.ok(201)["id"]);
    let mods = id(&owner.post(&format!("/api/v1/guilds/{g}/roles"), role("mods", Permissions::MANAGE_ROLES | Permissions::KICK_MEMBERS | Permissions::BAN_MEMBERS)).await.ok(201)["id"]);
    let code = owner.invite(g).await;
    mod_.join(&code).await; adm.join(&code).await;
    owner.put(&format!("/api/v1/guilds/{g}/members/{}/roles/{mods}", mod_.id), None).await.ok(204);
    owner.put(&format!("/api/v1/guilds/{g}/members/{}/roles/{admins}", adm.id), None).await.ok(204);
    let r = mod_.delete(&format!("/api/v1/guilds/{g}/members/{}", adm.id)).await;
    println!("mod kicks admin (still holding ADMINISTRATOR): {} {}", r.status, r.body);
    // announcements: @everyone denied SEND in general
    owner.put(&format!("/api/v1/channels/{general}/permissions/{g}"), Some(json!({"kind":"role","deny": Permissions::SEND_MESSAGES}))).await.ok(204);
    let r = mod_.post(&format!("/api/v1/channels/{general}/messages"), json!({"content":"x","nonce":"a1"})).await;
    println!("mod send before: {}", r.status);
    let r = mod_.put(&format!("/api/v1/channels/{general}/permissions/{g}"), Some(json!({"kind":"role","allow":0,"deny":0}))).await;
    println!("mod PUT empty @everyone overwrite: {} {}", r.status, r.body);
    let r = mod_.post(&format!("/api/v1/channels/{general}/messages"), json!({"content":"x","nonce":"a2"})).await;
    println!("mod send after PUT: {}", r.status);
    owner.put(&format!("/api/v1/channels/{general}/permissions/{g}"), Some(json!({"kind":"role","deny": Permissions::SEND_MESSAGES}))).await.ok(204);
    let r = mod_.delete(&format!("/api/v1/channels/{general}/permissions/{g}")).await;
    println!("mod DELETE @everyone overwrite: {} {}", r.status, r.body);
    let r = mod_.post(&format!("/api/v1/channels/{general}/messages"), json!({"content":"x","nonce":"a3"})).await;
    println!("mod send after DELETE: {}", r.status);
    // delete admins role refused, but patch its permissions to 0?
    let r = mod_.delete(&format!("/api/v1/guilds/{g}/roles/{admins}")).await;
    println!("mod DELETE admins role: {} {}", r.status, r.body);
    let r = mod_.patch(&format!("/api/v1/guilds/{g}/roles/{admins}"), json!({"permissions": 0})).await;
    println!("mod PATCH admins role perms=0: {} {}", r.status, r.body);
    let r = mod_.delete(&format!("/api/v1/guilds/{g}/roles/{admins}")).await;
    println!("mod DELETE admins role after: {} {}", r.status, r.body);
    // hierarchy: mod kicks / bans the admin
    let r = mod_.put(&format!("/api/v1/guilds/{g}/bans/{}", adm.id), Some(json!({}))).await;
    println!("mod bans admin: {} {}", r.status, r.body);
    relay.shutdown().await;
}
