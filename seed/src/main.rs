//! `seed`: creates the load-test account(s) and their credits, like the
//! real backend's seed (contract §4), on SQLite or PostgreSQL.
//!
//! ```text
//! seed [--database-url URL] [--email E] [--password P] [--credits N]
//!      [--bcrypt-cost C] [--users N] [--users-file FILE] [--no-migrate]
//! ```
//!
//! The database is migrated only when it is empty or carries our
//! migrations table. One that holds the Cooly schema without it (the real
//! backend's, built by its own migrations) is used as it is: seed creates
//! nothing but the rows an account needs. `--no-migrate` forces that mode.
//! Either way the columns seeding touches are checked before any write.
//!
//! Without `--users` it ensures one account (`--email`, default
//! `test@example.com`). With `--users N` it ensures the N accounts
//! `loadtest+0001@example.com` … instead, all with `--password`, and writes
//! them as `email,password` lines (no header) to `--users-file` (default
//! `loadtest-users.csv`), the format `loadgen run --users-file` reads.
//! `--users-file` without `--users` writes the one account.
//!
//! Reruns are safe: existing accounts keep their password and get their
//! available credits topped up to `--credits`, never lowered. It prints one
//! line per action and never a password, a hash, or a database password.
//!
//! Exit codes:
//! - 0: done;
//! - 1: runtime error (database unreachable or failing, a table or column
//!   seeding needs missing — named in the message, nothing written —, file
//!   not writable);
//! - 2: usage error (bad flag or value, bcrypt cost outside 4..=31, credits
//!   outside 0..=2147483647, unknown database URL scheme, a password the
//!   users file cannot hold). clap's own usage errors exit 2 as well.
//!
//! Every error is one line on stderr starting with `seed: `.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use store::db::{redact_url, Db, DbError, Migrations, SchemaOwner, DEFAULT_DATABASE_URL};
use store::seeding::{self, SeedError, SeedUser, DEFAULT_CREDITS, DEFAULT_EMAIL, DEFAULT_PASSWORD};

const DEFAULT_USERS_FILE: &str = "loadtest-users.csv";

/// Creates the load-test user(s) and their credits.
#[derive(Debug, Parser)]
#[command(name = "seed", version, about)]
struct Args {
    /// sqlite:FILE or postgres://USER:PASSWORD@HOST:PORT/DB.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,

    /// The account to ensure (ignored with --users).
    #[arg(long, default_value = DEFAULT_EMAIL)]
    email: String,

    /// The password of every seeded account.
    #[arg(
        long,
        env = "TEST_PASSWORD",
        default_value = DEFAULT_PASSWORD,
        hide_env_values = true,
        hide_default_value = true
    )]
    password: String,

    /// Available credits each account should have at least (0..=2147483647).
    #[arg(long, default_value_t = DEFAULT_CREDITS, allow_negative_numbers = true)]
    credits: i64,

    /// bcrypt cost of new password hashes (4..=31).
    #[arg(long, default_value_t = 10)]
    bcrypt_cost: u32,

    /// Ensure N accounts loadtest+0001@example.com … instead of --email.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000), conflicts_with = "email")]
    users: Option<u64>,

    /// Where to write the accounts as `email,password` lines
    /// [default with --users: loadtest-users.csv].
    #[arg(long, value_name = "FILE")]
    users_file: Option<PathBuf>,

    /// Never migrate: the database must hold the Cooly schema already
    /// (the real backend's).
    #[arg(long)]
    no_migrate: bool,
}

/// A failure, with the exit code it earns.
struct Failure {
    usage: bool,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            usage: true,
            message: message.into(),
        }
    }

    fn runtime(message: impl Into<String>) -> Failure {
        Failure {
            usage: false,
            message: message.into(),
        }
    }
}

impl From<SeedError> for Failure {
    fn from(e: SeedError) -> Failure {
        Failure {
            usage: e.is_usage(),
            message: e.to_string(),
        }
    }
}

fn main() -> ExitCode {
    // clap prints its own errors and exits 2 (0 for --help / --version).
    let args = Args::parse();
    let secret = url_password(&args.database_url);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(Failure::runtime(format!("cannot start: {e}")), secret),
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => fail(failure, secret),
    }
}

/// Prints the one error line, with any database password scrubbed.
fn fail(failure: Failure, secret: Option<String>) -> ExitCode {
    let mut line = failure.message.replace(['\r', '\n'], " ");
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        line = line.replace(&secret, "***");
    }
    eprintln!("seed: {line}");
    ExitCode::from(if failure.usage { 2 } else { 1 })
}

/// The password part of a `scheme://user:password@host` URL.
fn url_password(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let (userinfo, _) = rest.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    Some(password.to_string())
}

async fn run(args: &Args) -> Result<(), Failure> {
    seeding::validate(args.credits, args.bcrypt_cost)?;
    let accounts = match args.users {
        Some(n) => seeding::loadtest_users(n as usize, &args.password),
        None => vec![SeedUser::new(&args.email, &args.password)],
    };
    let users_file = args
        .users_file
        .clone()
        .or_else(|| args.users.map(|_| PathBuf::from(DEFAULT_USERS_FILE)));
    if users_file.is_some() {
        check_csv_safe(&args.password)?;
    }

    let migrations = if args.no_migrate {
        Migrations::Never
    } else {
        Migrations::Auto
    };
    let (db, owner) = Db::open_with(&args.database_url, migrations)
        .await
        .map_err(|e| match e {
            DbError::UnknownScheme(_) => Failure::usage(e.to_string()),
            other => Failure::runtime(other.to_string()),
        })?;
    let schema = match owner {
        SchemaOwner::Migrated => "migrated",
        SchemaOwner::Foreign => "existing schema, not migrated",
    };
    println!("database {} ({schema})", redact_url(&args.database_url));
    let outcome = async {
        // Checked before any write, whoever migrated the schema.
        seeding::check_schema(&db).await?;
        seeding::ensure_users(
            &db,
            &accounts,
            args.credits,
            args.bcrypt_cost,
            chrono::Utc::now(),
        )
        .await
    }
    .await;
    db.close().await;
    let actions = outcome?;
    let mut out = std::io::stdout().lock();
    for action in &actions {
        // A closed stdout (`seed | head`) is no reason to fail the seeding.
        let _ = writeln!(out, "{action}");
    }
    if let Some(path) = users_file {
        seeding::write_users_file(&path, &accounts)
            .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))?;
        let _ = writeln!(
            out,
            "wrote {} accounts to {}",
            accounts.len(),
            path.display()
        );
    }
    Ok(())
}

/// The loadgen splits each line at the first comma and trims both halves,
/// so a password must not start or end with blanks or hold a line break.
fn check_csv_safe(password: &str) -> Result<(), Failure> {
    if password.is_empty() || password.trim() != password || password.contains(['\n', '\r']) {
        return Err(Failure::usage(
            "the users file cannot hold a password that is empty, has a line break, \
             or starts or ends with blanks",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_url_password() {
        assert_eq!(
            url_password("postgres://u:secret@127.0.0.1:1/db").as_deref(),
            Some("secret")
        );
        assert_eq!(url_password("postgres://u@h/db"), None);
        assert_eq!(url_password("sqlite:x.db"), None);
    }

    #[test]
    fn csv_rejects_passwords_the_loadgen_would_mangle() {
        assert!(check_csv_safe("testpassword123").is_ok());
        assert!(check_csv_safe("with,comma").is_ok());
        assert!(check_csv_safe(" padded").is_err());
        assert!(check_csv_safe("two\nlines").is_err());
        assert!(check_csv_safe("").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
