//! `concord-relay`: parse flags, load config, init tracing, run, shut down on a signal.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use std::sync::Arc;

use concord_relay::cli::{AdminCommand, ArchiveCommand, Cli, Command};
use concord_relay::store::sql::SqlStore;
use concord_relay::store::{
    AdminStore, GuildStore, ModerationStore, ServerStore, Store, StoreError,
};
use concord_relay::{RelayConfig, Server};
use concord_svc::wait_for_signal;

async fn serve(config: RelayConfig) -> anyhow::Result<()> {
    let server = Server::spawn(config).await?;
    // The lines a self-hoster (or a script) needs, on stdout. A closed stdout is no reason
    // to stop serving.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "concord-relay listening on {}", server.url());
    for addr in server.p2p_addrs() {
        let _ = writeln!(out, "concord-relay libp2p {addr}");
    }
    let _ = out.flush();
    drop(out);
    wait_for_signal().await;
    server.shutdown().await;
    Ok(())
}

/// Copies one database into another and prints the rows per table.
async fn transfer(config: &RelayConfig, from: &str, to: &str) -> anyhow::Result<()> {
    use concord_relay::store::sql::transfer::copy_all;
    let pool = config.database.pool();
    let source = SqlStore::connect(from, &pool).await?;
    let dest = SqlStore::connect(to, &pool).await?;
    let copied = copy_all(&source, &dest).await?;
    let mut out = std::io::stdout().lock();
    for c in &copied {
        writeln!(out, "{:<16} {:>10} rows", c.table, c.rows)?;
    }
    writeln!(
        out,
        "copied {} rows; row counts match",
        copied.iter().map(|c| c.rows).sum::<i64>()
    )?;
    Ok(())
}

/// `archive run|list|restore` against the configured database and archive store.
async fn archive(config: &RelayConfig, command: ArchiveCommand) -> anyhow::Result<()> {
    use concord_relay::archive::Archiver;
    if config.database_url.is_none() {
        let _ = std::fs::create_dir_all(&config.data_dir);
    }
    let store: Arc<dyn Store> =
        Arc::new(SqlStore::connect(&config.database_url(), &config.database.pool()).await?);
    let archiver = Archiver::open(store.clone(), &config.archive_location())?;
    let now = concord_relay::app::now_ms();
    let mut out = std::io::stdout().lock();
    match command {
        ArchiveCommand::Run { older_than_days } => {
            let keep = older_than_days.unwrap_or(config.retention.archive_after_days);
            if keep == 0 {
                anyhow::bail!("retention is off (archive_after_days = 0); pass --older-than-days");
            }
            archiver.ensure_partitions(now).await?;
            let done = archiver.archive_due(now, keep).await?;
            for (month, n) in &done {
                writeln!(out, "{month} {n:>10} messages archived")?;
            }
            writeln!(
                out,
                "{} months archived to {}",
                done.len(),
                config.archive_location()
            )?;
        }
        ArchiveCommand::List => {
            for m in archiver.list().await? {
                writeln!(out, "{} {:>10} messages  {}", m.month, m.messages, m.object)?;
            }
        }
        ArchiveCommand::Restore { month } => {
            let n = archiver.restore_month(month).await?;
            writeln!(out, "{month} {n:>10} messages restored")?;
        }
    }
    store.close().await;
    Ok(())
}

/// `admin grant|revoke|list` against the configured database.
async fn admin(config: &RelayConfig, command: AdminCommand) -> anyhow::Result<()> {
    use concord_relay::store::AuditEntry;
    if config.database_url.is_none() {
        let _ = std::fs::create_dir_all(&config.data_dir);
    }
    let store = SqlStore::connect(&config.database_url(), &config.database.pool()).await?;
    let mut out = std::io::stdout().lock();
    let now = concord_relay::app::now_ms;
    let audit = async |action: &str, target: concord_proto::Id| {
        // Ids from worker 0 with the time: this process holds no worker lease.
        let id = concord_proto::IdGenerator::new(0).next(now());
        store
            .add_audit(&AuditEntry {
                id,
                actor_id: None,
                action: action.into(),
                target_id: Some(target),
                detail: "command line".into(),
                created_at: now(),
            })
            .await
    };
    let account = async |username: &str| {
        store
            .admin_account_by_username(username)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no account named {username:?}"))
    };
    match &command {
        AdminCommand::Grant { username } | AdminCommand::Revoke { username } => {
            let admin = matches!(command, AdminCommand::Grant { .. });
            let account = account(username).await?;
            store.set_instance_admin(account.id, admin).await?;
            audit(
                if admin { "admin_grant" } else { "admin_revoke" },
                account.id,
            )
            .await?;
            let verb = if admin { "is now" } else { "is no longer" };
            writeln!(out, "{username} ({}) {verb} an instance admin", account.id)?;
        }
        AdminCommand::List => {
            for a in store.instance_admins().await? {
                writeln!(out, "{} {}", a.id, a.username)?;
            }
        }
        AdminCommand::SetupLink => {
            if !store.instance_admins().await?.is_empty() {
                anyhow::bail!("this relay already has an instance admin");
            }
            let token = concord_relay::api::admin::setup_token(&store).await?;
            let origin = config
                .public_url
                .first()
                .cloned()
                .unwrap_or_else(|| format!("http://{}", config.listen));
            writeln!(
                out,
                "{}",
                concord_relay::api::admin::setup_url(&origin, &token)
            )?;
        }
        AdminCommand::DeleteUser { username } => {
            let account = account(username).await?;
            let deleted = store
                .delete_account(account.id, now())
                .await
                .map_err(|e| match e {
                    StoreError::Conflict(_) => anyhow::anyhow!(
                        "{username} owns guilds: hand them over or delete them first"
                    ),
                    other => other.into(),
                })?;
            audit("account_delete", account.id).await?;
            writeln!(
                out,
                "{username} ({}) deleted; {} sessions ended, left {} guilds",
                account.id,
                deleted.sessions.len(),
                deleted.guilds.len()
            )?;
        }
        AdminCommand::DeleteGuild { guild_id } => {
            store.delete_guild(*guild_id).await.map_err(|e| match e {
                StoreError::NotFound => anyhow::anyhow!("no guild {guild_id}"),
                other => other.into(),
            })?;
            audit("guild_delete", *guild_id).await?;
            writeln!(out, "guild {guild_id} deleted")?;
        }
    }
    store.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.relay_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("concord-relay: {e}");
            return ExitCode::from(2);
        }
    };
    // Flushes exported spans when main returns.
    let _telemetry = match concord_relay::telemetry::init(cli.log.as_deref(), &config.telemetry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("concord-relay: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            if config.database_url.is_none() {
                let _ = std::fs::create_dir_all(&config.data_dir);
            }
            SqlStore::connect(&config.database_url(), &config.database.pool())
                .await
                .map(|_| println!("migrations applied"))
                .map_err(Into::into)
        }
        Command::CheckConfig => toml::to_string(&config)
            .map(|t| print!("{t}"))
            .map_err(Into::into),
        Command::Openapi => {
            println!("{}", concord_relay::api::openapi_json());
            Ok(())
        }
        Command::MigrateStore { from, to } => transfer(&config, &from, &to).await,
        Command::Archive(command) => archive(&config, command).await,
        Command::Admin(command) => admin(&config, command).await,
        Command::Backup { to } => {
            if to.exists() {
                Err(anyhow::anyhow!(
                    "{} exists; a backup goes to a new file",
                    to.display()
                ))
            } else {
                let dest = format!("sqlite://{}?mode=rwc", to.display());
                if config.database_url.is_none() {
                    let _ = std::fs::create_dir_all(&config.data_dir);
                }
                transfer(&config, &config.database_url(), &dest).await
            }
        }
        Command::Restore { from } => {
            if !from.is_file() {
                Err(anyhow::anyhow!("{} is not a backup file", from.display()))
            } else {
                if config.database_url.is_none() {
                    let _ = std::fs::create_dir_all(&config.data_dir);
                }
                let source = format!("sqlite://{}?mode=rw", from.display());
                transfer(&config, &source, &config.database_url()).await
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("concord-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}
