//! Permission bitflags and the rule that turns roles and channel overwrites into the
//! permissions a member has in a channel.
//!
//! The rule: the owner and administrators have everything; otherwise @everyone's bits united
//! with the member's roles', then the channel's overwrites in order (@everyone, the member's
//! roles, the member); without view, nothing. While a timeout runs, `TIMED_OUT_DENY` is
//! taken away after the overwrites (never from administrators). `gossip_eligible` says
//! which channels may go on GossipSub: those every member may view.

use serde::{Deserialize, Serialize};

use crate::Id;

/// A set of permission bits. Serialised as a JSON number (the bits fit well below 2^53).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct Permissions(pub u64);

impl Permissions {
    pub const VIEW_CHANNEL: Permissions = Permissions(1 << 0);
    pub const SEND_MESSAGES: Permissions = Permissions(1 << 1);
    pub const MANAGE_MESSAGES: Permissions = Permissions(1 << 2);
    pub const MANAGE_CHANNELS: Permissions = Permissions(1 << 3);
    pub const MANAGE_ROLES: Permissions = Permissions(1 << 4);
    pub const KICK_MEMBERS: Permissions = Permissions(1 << 5);
    pub const BAN_MEMBERS: Permissions = Permissions(1 << 6);
    pub const CREATE_INVITES: Permissions = Permissions(1 << 7);
    pub const CONNECT: Permissions = Permissions(1 << 8);
    pub const SPEAK: Permissions = Permissions(1 << 9);
    pub const ADMINISTRATOR: Permissions = Permissions(1 << 10);
    pub const MANAGE_GUILD: Permissions = Permissions(1 << 11);
    pub const ADD_REACTIONS: Permissions = Permissions(1 << 12);
    pub const READ_HISTORY: Permissions = Permissions(1 << 13);
    /// Read the guild's audit log.
    pub const VIEW_AUDIT_LOG: Permissions = Permissions(1 << 14);
    /// Time members out and work the guild's reports queue.
    pub const MODERATE_MEMBERS: Permissions = Permissions(1 << 15);
    /// Server-mute others in voice channels.
    pub const MUTE_MEMBERS: Permissions = Permissions(1 << 16);

    pub const NONE: Permissions = Permissions(0);
    pub const ALL: Permissions = Permissions((1 << 17) - 1);

    /// What a timed-out member loses until the timeout ends (they can still read).
    pub const TIMED_OUT_DENY: Permissions = Permissions(
        Self::SEND_MESSAGES.0
            | Self::ADD_REACTIONS.0
            | Self::CREATE_INVITES.0
            | Self::CONNECT.0
            | Self::SPEAK.0,
    );

    /// What @everyone may do in a new guild.
    pub const DEFAULT_EVERYONE: Permissions = Permissions(
        Self::VIEW_CHANNEL.0
            | Self::SEND_MESSAGES.0
            | Self::CREATE_INVITES.0
            | Self::CONNECT.0
            | Self::SPEAK.0
            | Self::ADD_REACTIONS.0
            | Self::READ_HISTORY.0,
    );

    /// What the two participants of a direct-message channel may do.
    pub const DM: Permissions = Permissions(
        Self::VIEW_CHANNEL.0
            | Self::SEND_MESSAGES.0
            | Self::ADD_REACTIONS.0
            | Self::READ_HISTORY.0
            | Self::CONNECT.0
            | Self::SPEAK.0,
    );

    pub const NAMES: [(&'static str, Permissions); 17] = [
        ("view_channel", Self::VIEW_CHANNEL),
        ("send_messages", Self::SEND_MESSAGES),
        ("manage_messages", Self::MANAGE_MESSAGES),
        ("manage_channels", Self::MANAGE_CHANNELS),
        ("manage_roles", Self::MANAGE_ROLES),
        ("kick_members", Self::KICK_MEMBERS),
        ("ban_members", Self::BAN_MEMBERS),
        ("create_invites", Self::CREATE_INVITES),
        ("connect", Self::CONNECT),
        ("speak", Self::SPEAK),
        ("administrator", Self::ADMINISTRATOR),
        ("manage_guild", Self::MANAGE_GUILD),
        ("add_reactions", Self::ADD_REACTIONS),
        ("read_history", Self::READ_HISTORY),
        ("view_audit_log", Self::VIEW_AUDIT_LOG),
        ("moderate_members", Self::MODERATE_MEMBERS),
        ("mute_members", Self::MUTE_MEMBERS),
    ];

    pub fn contains(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when no bit outside the defined set is present.
    pub fn is_known(self) -> bool {
        self.0 & !Self::ALL.0 == 0
    }
}

impl std::ops::BitOr for Permissions {
    type Output = Permissions;
    fn bitor(self, rhs: Permissions) -> Permissions {
        Permissions(self.0 | rhs.0)
    }
}

impl std::ops::BitAnd for Permissions {
    type Output = Permissions;
    fn bitand(self, rhs: Permissions) -> Permissions {
        Permissions(self.0 & rhs.0)
    }
}

impl std::ops::Not for Permissions {
    type Output = Permissions;
    fn not(self) -> Permissions {
        Permissions(!self.0 & Self::ALL.0)
    }
}

/// An allow/deny pair on a channel for a role (the @everyone role's id is the guild id) or a
/// member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Overwrite {
    pub target_id: Id,
    pub kind: OverwriteKind,
    pub allow: Permissions,
    pub deny: Permissions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum OverwriteKind {
    Role,
    Member,
}

impl OverwriteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OverwriteKind::Role => "role",
            OverwriteKind::Member => "member",
        }
    }
    pub fn parse(s: &str) -> Option<OverwriteKind> {
        match s {
            "role" => Some(OverwriteKind::Role),
            "member" => Some(OverwriteKind::Member),
            _ => None,
        }
    }
}

/// Whether every member of the guild may view the channel, so its messages may go on
/// GossipSub (a topic any subscriber reads): a guild text channel, not private, whose
/// @everyone role (`everyone`, its guild-level permissions) may view, with no overwrite of
/// any kind (@everyone, role or member) denying view. Roles only add permissions, so then
/// every member sees it; any deny means some member may not. Nodes decide with this one
/// function.
pub fn gossip_eligible(channel: &crate::model::Channel, everyone: Permissions) -> bool {
    channel.guild_id.is_some()
        && channel.kind == crate::model::ChannelKind::Text
        && !channel.private
        && (everyone.contains(Permissions::VIEW_CHANNEL)
            || everyone.contains(Permissions::ADMINISTRATOR))
        && !channel
            .overwrites
            .iter()
            .any(|o| o.deny.contains(Permissions::VIEW_CHANNEL))
}

/// Guild-level permissions: the owner and administrators hold everything; otherwise the union
/// of @everyone and the member's roles.
pub fn base_permissions(
    is_owner: bool,
    everyone: Permissions,
    member_roles: impl IntoIterator<Item = Permissions>,
) -> Permissions {
    if is_owner {
        return Permissions::ALL;
    }
    let perms = member_roles.into_iter().fold(everyone, |acc, p| acc | p);
    if perms.contains(Permissions::ADMINISTRATOR) {
        Permissions::ALL
    } else {
        perms
    }
}

/// A timed-out member keeps reading but loses `TIMED_OUT_DENY`; administrators (and the
/// owner) are never limited.
pub fn apply_timeout(perms: Permissions, timeout_until: Option<i64>, now_ms: i64) -> Permissions {
    match timeout_until {
        Some(until) if until > now_ms && !perms.contains(Permissions::ADMINISTRATOR) => {
            perms & !Permissions::TIMED_OUT_DENY
        }
        _ => perms,
    }
}

/// Channel permissions: @everyone overwrite, then the union of the member's role overwrites
/// (deny before allow), then the member's own overwrite. Administrators skip overwrites.
pub fn channel_permissions(
    base: Permissions,
    guild_id: Id,
    member_id: Id,
    member_role_ids: &[Id],
    overwrites: &[Overwrite],
) -> Permissions {
    if base.contains(Permissions::ADMINISTRATOR) {
        return Permissions::ALL;
    }
    let mut perms = base;
    if let Some(o) = overwrites
        .iter()
        .find(|o| o.kind == OverwriteKind::Role && o.target_id == guild_id)
    {
        perms = (perms & !o.deny) | o.allow;
    }
    let (mut allow, mut deny) = (Permissions::NONE, Permissions::NONE);
    for o in overwrites
        .iter()
        .filter(|o| o.kind == OverwriteKind::Role && member_role_ids.contains(&o.target_id))
    {
        allow = allow | o.allow;
        deny = deny | o.deny;
    }
    perms = (perms & !deny) | allow;
    if let Some(o) = overwrites
        .iter()
        .find(|o| o.kind == OverwriteKind::Member && o.target_id == member_id)
    {
        perms = (perms & !o.deny) | o.allow;
    }
    // Without view, nothing else in the channel applies.
    if !perms.contains(Permissions::VIEW_CHANNEL) {
        Permissions::NONE
    } else {
        perms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUILD: Id = Id(1);
    const MOD_ROLE: Id = Id(2);
    const ME: Id = Id(3);

    fn deny_everyone_view() -> Overwrite {
        Overwrite {
            target_id: GUILD,
            kind: OverwriteKind::Role,
            allow: Permissions::NONE,
            deny: Permissions::VIEW_CHANNEL,
        }
    }

    #[test]
    fn only_channels_every_member_may_view_are_gossip_eligible() {
        use crate::model::{Channel, ChannelKind};
        let channel = |kind, private, overwrites: Vec<Overwrite>| Channel {
            id: Id(10),
            guild_id: Some(GUILD),
            kind,
            name: "c".into(),
            topic: None,
            position: 0,
            private,
            slowmode_secs: 0,
            overwrites,
            last_seq: 0,
            recipients: Vec::new(),
        };
        let everyone = Permissions::DEFAULT_EVERYONE;
        let open = channel(ChannelKind::Text, false, Vec::new());
        assert!(gossip_eligible(&open, everyone));
        // @everyone without view at the guild level: only roles see it.
        assert!(!gossip_eligible(
            &open,
            everyone & !Permissions::VIEW_CHANNEL
        ));
        assert!(gossip_eligible(&open, Permissions::ADMINISTRATOR));
        assert!(!gossip_eligible(
            &channel(ChannelKind::Text, true, Vec::new()),
            everyone
        ));
        assert!(!gossip_eligible(
            &channel(ChannelKind::Voice, false, Vec::new()),
            everyone
        ));
        let deny = |target_id, kind| Overwrite {
            target_id,
            kind,
            allow: Permissions::NONE,
            deny: Permissions::VIEW_CHANNEL,
        };
        for o in [
            deny_everyone_view(),
            deny(MOD_ROLE, OverwriteKind::Role),
            deny(ME, OverwriteKind::Member),
        ] {
            assert!(!gossip_eligible(
                &channel(ChannelKind::Text, false, vec![o]),
                everyone
            ));
        }
        // An overwrite that only allows, or denies something else, keeps it eligible.
        let allow_only = Overwrite {
            target_id: MOD_ROLE,
            kind: OverwriteKind::Role,
            allow: Permissions::MANAGE_MESSAGES,
            deny: Permissions::SEND_MESSAGES,
        };
        assert!(gossip_eligible(
            &channel(ChannelKind::Text, false, vec![allow_only]),
            everyone
        ));
        let mut dm = open.clone();
        dm.guild_id = None;
        assert!(!gossip_eligible(&dm, everyone));
    }

    #[test]
    fn a_timeout_takes_sending_away_until_it_ends() {
        let member = Permissions::DEFAULT_EVERYONE;
        let limited = apply_timeout(member, Some(2_000), 1_000);
        assert!(!limited.contains(Permissions::SEND_MESSAGES));
        assert!(!limited.contains(Permissions::SPEAK));
        assert!(limited.contains(Permissions::VIEW_CHANNEL | Permissions::READ_HISTORY));
        assert_eq!(apply_timeout(member, Some(2_000), 2_000), member);
        assert_eq!(apply_timeout(member, None, 1_000), member);
        assert_eq!(
            apply_timeout(Permissions::ALL, Some(2_000), 1_000),
            Permissions::ALL
        );
    }

    #[test]
    fn owner_and_admin_hold_everything() {
        assert_eq!(
            base_permissions(true, Permissions::NONE, []),
            Permissions::ALL
        );
        assert_eq!(
            base_permissions(false, Permissions::NONE, [Permissions::ADMINISTRATOR]),
            Permissions::ALL
        );
        let base = base_permissions(false, Permissions::DEFAULT_EVERYONE, []);
        assert!(!base.contains(Permissions::MANAGE_MESSAGES));
    }

    #[test]
    fn private_channel_needs_an_allow() {
        let base = Permissions::DEFAULT_EVERYONE;
        let private = [deny_everyone_view()];
        assert_eq!(
            channel_permissions(base, GUILD, ME, &[], &private),
            Permissions::NONE
        );
        let with_role = [
            deny_everyone_view(),
            Overwrite {
                target_id: MOD_ROLE,
                kind: OverwriteKind::Role,
                allow: Permissions::VIEW_CHANNEL,
                deny: Permissions::NONE,
            },
        ];
        assert!(
            channel_permissions(base, GUILD, ME, &[MOD_ROLE], &with_role)
                .contains(Permissions::VIEW_CHANNEL)
        );
        assert_eq!(
            channel_permissions(base, GUILD, ME, &[], &with_role),
            Permissions::NONE
        );
        let member_deny = [
            with_role[1],
            Overwrite {
                target_id: ME,
                kind: OverwriteKind::Member,
                allow: Permissions::NONE,
                deny: Permissions::SEND_MESSAGES,
            },
        ];
        let p = channel_permissions(base, GUILD, ME, &[MOD_ROLE], &member_deny);
        assert!(p.contains(Permissions::VIEW_CHANNEL) && !p.contains(Permissions::SEND_MESSAGES));
        assert_eq!(
            channel_permissions(Permissions::ALL, GUILD, ME, &[], &private),
            Permissions::ALL
        );
    }

    #[test]
    fn not_stays_in_range() {
        assert!((!Permissions::VIEW_CHANNEL).is_known());
        assert!(!Permissions(1 << 40).is_known());
    }
}
