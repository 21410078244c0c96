//! Who is in voice across a cluster. A room's participants live in its owner's memory
//! (`placement.rs`); the owner also writes them to Redis, so that another instance can put
//! them in its clients' guild views (`ready`, guild fetches), and so that a join on one
//! owner can take the user out of a channel another owner holds (one voice channel per
//! user, cluster-wide, as on a single instance).
//!
//! Two hashes in the placement's Redis Cluster slot: `{tag}:guild:{guild}` (user → entry,
//! read for a guild view) and `{tag}:where` (user → entry, read on a join). An entry is
//! `"{instance} {channel} {VoiceState as JSON}"`: the prefix lets an owner delete only its
//! own entry (a user who moved to another owner keeps the new one) and lets readers skip
//! the entries of dead instances without parsing them.
//!
//! Read by `api/guilds.rs::guild_view` (for `ready`) and by a join that must first take the
//! user out of a room on another owner (`api/voice_forward.rs::leave_other_owner`).

use concord_proto::Id;
use concord_proto::model::VoiceState;
use redis::Script;

use super::placement::Placement;

/// Deletes `ARGV[1]`'s field from every hash in KEYS whose value starts with `ARGV[2]`.
const FORGET: &str = r"
for _, key in ipairs(KEYS) do
  local cur = redis.call('HGET', key, ARGV[1])
  if cur and string.sub(cur, 1, #ARGV[2]) == ARGV[2] then redis.call('HDEL', key, ARGV[1]) end
end
return 0
";

/// One participant as its room's owner recorded them.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub instance: String,
    pub state: VoiceState,
}

fn prefix(instance: &str, channel: Id) -> String {
    format!("{instance} {channel} ")
}

fn encode(instance: &str, state: &VoiceState) -> Option<String> {
    let channel = state.channel_id?;
    let json = serde_json::to_string(state).expect("a voice state serialises");
    Some(format!("{}{json}", prefix(instance, channel)))
}

/// None for anything this module did not write (an entry is never trusted to be well-formed:
/// Redis is shared).
fn decode(value: &str) -> Option<Entry> {
    let mut parts = value.splitn(3, ' ');
    let (instance, channel, json) = (parts.next()?, parts.next()?, parts.next()?);
    let state: VoiceState = serde_json::from_str(json).ok()?;
    (state.channel_id?.to_string() == channel && !instance.is_empty()).then(|| Entry {
        instance: instance.to_owned(),
        state,
    })
}

impl Placement {
    fn guild_key(&self, guild: Id) -> String {
        format!("{}:guild:{guild}", self.tag)
    }

    fn where_key(&self) -> String {
        format!("{}:where", self.tag)
    }

    fn keys_of(&self, guild: Option<Id>) -> Vec<String> {
        let mut keys = vec![self.where_key()];
        keys.extend(guild.map(|g| self.guild_key(g)));
        keys
    }

    /// Records `state` (its user is in `state.channel_id`, held here).
    pub async fn record(&self, state: &VoiceState) -> redis::RedisResult<()> {
        let Some(value) = encode(&self.instance, state) else {
            return Ok(());
        };
        let r = async {
            let mut conn = self.conn().await?;
            let mut pipe = redis::pipe();
            for key in self.keys_of(state.guild_id) {
                pipe.cmd("HSET")
                    .arg(key)
                    .arg(state.user_id.to_string())
                    .arg(&value)
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn).await
        }
        .await;
        self.check(r).await
    }

    /// Forgets that `user` is in `channel` on `instance` (an entry of a later join on
    /// another owner stays).
    pub async fn forget(
        &self,
        guild: Option<Id>,
        user: Id,
        channel: Id,
        instance: &str,
    ) -> redis::RedisResult<()> {
        let r = async {
            let mut conn = self.conn().await?;
            let script = Script::new(FORGET);
            let mut call = script.prepare_invoke();
            for key in self.keys_of(guild) {
                call.key(key);
            }
            call.arg(user.to_string())
                .arg(prefix(instance, channel))
                .invoke_async::<i64>(&mut conn)
                .await
                .map(drop)
        }
        .await;
        self.check(r).await
    }

    /// The participants of the guild's voice channels on live instances. Entries of dead
    /// instances are dropped from Redis on the way (their users rejoin on a new owner).
    pub async fn guild_states(&self, guild: Id) -> redis::RedisResult<Vec<Entry>> {
        let r = async {
            let mut conn = self.conn().await?;
            let all: Vec<(String, String)> = redis::cmd("HGETALL")
                .arg(self.guild_key(guild))
                .query_async(&mut conn)
                .await?;
            let entries: Vec<Entry> = all.iter().filter_map(|(_, v)| decode(v)).collect();
            let mut instances: Vec<&str> = entries.iter().map(|e| e.instance.as_str()).collect();
            instances.sort_unstable();
            instances.dedup();
            if instances.is_empty() {
                return Ok((entries, Vec::new()));
            }
            let keys: Vec<String> = instances.iter().map(|i| self.instance_key(i)).collect();
            let urls: Vec<Option<String>> =
                redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
            let dead: Vec<String> = instances
                .iter()
                .zip(urls)
                .filter(|(i, url)| url.is_none() && **i != self.instance)
                .map(|(i, _)| (*i).to_owned())
                .collect();
            Ok((entries, dead))
        }
        .await;
        let (entries, dead) = self.check(r).await?;
        let (live, gone): (Vec<Entry>, Vec<Entry>) = entries
            .into_iter()
            .partition(|e| !dead.contains(&e.instance));
        for e in gone {
            if let Some(channel) = e.state.channel_id {
                self.forget(e.state.guild_id, e.state.user_id, channel, &e.instance)
                    .await?;
            }
        }
        Ok(live)
    }

    /// Where `user` is in voice on another live instance, with that instance's URL.
    pub async fn elsewhere(&self, user: Id) -> redis::RedisResult<Option<(Entry, String)>> {
        let r = async {
            let mut conn = self.conn().await?;
            let value: Option<String> = redis::cmd("HGET")
                .arg(self.where_key())
                .arg(user.to_string())
                .query_async(&mut conn)
                .await?;
            let Some(entry) = value.as_deref().and_then(decode) else {
                return Ok(None);
            };
            if entry.instance == self.instance {
                return Ok(None);
            }
            let url: Option<String> = redis::cmd("GET")
                .arg(self.instance_key(&entry.instance))
                .query_async(&mut conn)
                .await?;
            Ok(url.map(|url| (entry, url)))
        }
        .await;
        self.check(r).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(channel: Option<Id>) -> VoiceState {
        VoiceState {
            guild_id: Some(Id(7)),
            channel_id: channel,
            user_id: Id(42),
            device_key: "k".into(),
            self_mute: false,
            self_deaf: true,
            server_mute: false,
            speak: true,
            client: "browser".into(),
            joined_at: 1,
            self_video: false,
            cross_instance: false,
        }
    }

    #[test]
    fn an_entry_round_trips_and_starts_with_its_owner_and_channel() {
        let s = state(Some(Id(9)));
        let value = encode("abc", &s).unwrap();
        assert!(value.starts_with(&prefix("abc", Id(9))));
        assert_eq!(
            decode(&value),
            Some(Entry {
                instance: "abc".into(),
                state: s
            })
        );
        assert_eq!(encode("abc", &state(None)), None, "a leave is not recorded");
    }

    #[test]
    fn malformed_or_inconsistent_entries_are_ignored() {
        let json = serde_json::to_string(&state(Some(Id(9)))).unwrap();
        for bad in [
            String::new(),
            "abc".to_owned(),
            "abc 9".to_owned(),
            "abc 9 {".to_owned(),
            format!("abc 8 {json}"),
            format!(" 9 {json}"),
        ] {
            assert_eq!(decode(&bad), None, "{bad:?}");
        }
    }
}
