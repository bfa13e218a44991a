//! No Docker engine runs where the tests run, so docker-compose.yml and the
//! Dockerfile are checked against the code instead: the services and
//! container names the load-test README uses, the port, the environment
//! variables the binaries actually read (taken from their sources at test
//! time), healthchecks and start order.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("mock-api sits in the workspace root")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn compose() -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read("docker-compose.yml"))
        .unwrap_or_else(|e| panic!("docker-compose.yml is not YAML: {e}"));
    assert_eq!(docs.len(), 1, "docker-compose.yml holds one document");
    docs.remove(0)
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    let service = &compose["services"][name];
    assert!(!service.is_badvalue(), "no service {name:?}");
    service
}

fn text<'a>(node: &'a Yaml, what: &str) -> &'a str {
    node.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {node:?}"))
}

fn strings(node: &Yaml, what: &str) -> Vec<String> {
    node.as_vec()
        .unwrap_or_else(|| panic!("{what} is not a list: {node:?}"))
        .iter()
        .map(|item| text(item, what).to_string())
        .collect()
}

/// A service's environment, in map form; `None` for a pass-through
/// variable (set in the container only when set in the shell).
fn environment(service: &Yaml) -> Vec<(String, Option<String>)> {
    match &service["environment"] {
        Yaml::BadValue => Vec::new(),
        Yaml::Hash(vars) => vars
            .iter()
            .map(|(name, value)| {
                let name = text(name, "an environment variable's name").to_string();
                let value = match value {
                    Yaml::Null => None,
                    Yaml::Integer(n) => Some(n.to_string()),
                    other => Some(text(other, &name).to_string()),
                };
                (name, value)
            })
            .collect(),
        other => panic!("environment must be a map: {other:?}"),
    }
}

fn env_value(service: &Yaml, name: &str) -> String {
    environment(service)
        .into_iter()
        .find(|(var, _)| var == name)
        .and_then(|(_, value)| value)
        .unwrap_or_else(|| panic!("{name} is not set"))
}

fn healthcheck(service: &Yaml) -> String {
    strings(&service["healthcheck"]["test"], "healthcheck.test").join(" ")
}

fn depends_on(service: &Yaml, dependency: &str) -> String {
    text(
        &service["depends_on"][dependency]["condition"],
        "depends_on condition",
    )
    .to_string()
}

/// Every environment variable name the crate's sources read: clap's
/// `env = "NAME"` and `std::env::var("NAME")`.
fn variables_read_by(crate_dir: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for source in rust_sources(&repo_root().join(crate_dir).join("src")) {
        let code = std::fs::read_to_string(&source).unwrap();
        for marker in ["env = \"", "env::var(\"", "env::var_os(\""] {
            for (at, _) in code.match_indices(marker) {
                let rest = &code[at + marker.len()..];
                if let Some(end) = rest.find('"') {
                    names.insert(rest[..end].to_string());
                }
            }
        }
    }
    names
}

fn rust_sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(rust_sources(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
    found
}

/// The binaries of the workspace: members with a `src/main.rs`.
fn workspace_binaries() -> Vec<String> {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    manifest["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| member.as_str().unwrap().to_string())
        .filter(|member| repo_root().join(member).join("src/main.rs").exists())
        .collect()
}

/// `ENV NAME=value` lines of the Dockerfile's final stage.
fn dockerfile_env() -> Vec<(String, String)> {
    let dockerfile = read("Dockerfile");
    let final_stage = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, stage)| stage)
        .unwrap();
    final_stage
        .lines()
        .filter_map(|line| line.strip_prefix("ENV "))
        .map(|assignment| {
            let (name, value) = assignment
                .split_once('=')
                .unwrap_or_else(|| panic!("ENV {assignment}: use NAME=value"));
            (name.to_string(), value.to_string())
        })
        .collect()
}

#[test]
fn the_services_and_containers_are_those_the_readme_names() {
    let compose = compose();
    let names: BTreeSet<&str> = compose["services"]
        .as_hash()
        .unwrap()
        .keys()
        .map(|name| text(name, "a service name"))
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["postgres", "redis", "seed", "backend", "loadgen"])
    );

    let postgres = service(&compose, "postgres");
    assert!(text(&postgres["image"], "image").starts_with("postgres:16"));
    assert_eq!(text(&postgres["container_name"], "name"), "cooly-postgres");
    assert_eq!(env_value(postgres, "POSTGRES_USER"), "postgres");
    assert_eq!(env_value(postgres, "POSTGRES_DB"), "cooly_db");

    let redis = service(&compose, "redis");
    assert!(text(&redis["image"], "image").starts_with("redis:7"));
    assert_eq!(text(&redis["container_name"], "name"), "cooly-redis");
}

#[test]
fn the_api_is_published_on_loopback_port_5001_and_listens_on_all_interfaces_inside() {
    let compose = compose();
    let api = service(&compose, "backend");
    assert_eq!(
        strings(&api["ports"], "ports"),
        vec!["127.0.0.1:5001:5001".to_string()]
    );
    assert!(
        dockerfile_env().contains(&("BIND".into(), "0.0.0.0:5001".into())),
        "the image sets BIND=0.0.0.0:5001"
    );
    assert!(read("Dockerfile").contains("EXPOSE 5001"));
    assert_eq!(
        env_value(service(&compose, "loadgen"), "API_BASE"),
        "http://backend:5001"
    );
}

#[test]
fn every_variable_set_for_a_binary_is_one_it_reads() {
    let compose = compose();
    let binaries = workspace_binaries();
    let image_env: Vec<String> = dockerfile_env().into_iter().map(|(name, _)| name).collect();
    let mut checked = 0;
    for (name, definition) in compose["services"].as_hash().unwrap() {
        let name = text(name, "a service name");
        if definition["build"].is_badvalue() {
            continue;
        }
        let command = strings(&definition["command"], "command");
        let binary = &command[0];
        assert!(
            binaries.contains(binary),
            "service {name} runs {binary:?}, not one of the workspace binaries {binaries:?}"
        );
        let read = variables_read_by(binary);
        let mut set: Vec<String> = environment(definition)
            .into_iter()
            .map(|(var, _)| var)
            .collect();
        if binary == "mock-api" {
            set.extend(image_env.iter().cloned());
        }
        let unread: Vec<&String> = set.iter().filter(|var| !read.contains(*var)).collect();
        assert!(
            unread.is_empty(),
            "service {name}: {binary} reads none of {unread:?} (it reads {read:?})"
        );
        checked += 1;
    }
    assert_eq!(checked, 3, "seed, mock-api and loadgen are built here");
}

#[test]
fn the_api_uses_postgres_and_redis_of_the_compose_network() {
    let compose = compose();
    let api = service(&compose, "backend");
    for user in ["backend", "seed"] {
        let url = env_value(service(&compose, user), "DATABASE_URL");
        assert!(
            url.starts_with("postgres://postgres:${POSTGRES_PASSWORD")
                && url.ends_with("@postgres:5432/cooly_db"),
            "{user}: DATABASE_URL {url}"
        );
    }
    assert_eq!(env_value(api, "REDIS_URL"), "redis://redis:6379");
    assert_eq!(env_value(api, "QUEUE_NAME"), "main");
}

#[test]
fn services_start_once_their_dependencies_are_ready() {
    let compose = compose();
    let postgres = service(&compose, "postgres");
    let redis = service(&compose, "redis");
    let seed = service(&compose, "seed");
    let api = service(&compose, "backend");
    let loadgen = service(&compose, "loadgen");

    assert!(healthcheck(postgres).contains("pg_isready"));
    assert!(healthcheck(redis).contains("redis-cli ping"));
    assert!(healthcheck(api).contains("http://127.0.0.1:5001/healthz"));
    assert!(
        read("Dockerfile").contains(" curl"),
        "the image has the healthcheck's curl"
    );

    assert_eq!(depends_on(seed, "postgres"), "service_healthy");
    assert_eq!(text(&seed["restart"], "restart"), "no");
    assert_eq!(depends_on(api, "postgres"), "service_healthy");
    assert_eq!(depends_on(api, "redis"), "service_healthy");
    assert_eq!(depends_on(api, "seed"), "service_completed_successfully");
    assert_eq!(depends_on(loadgen, "backend"), "service_healthy");
    assert_eq!(
        strings(&loadgen["profiles"], "profiles"),
        vec!["load".to_string()]
    );
}

#[test]
fn no_secret_is_written_down_and_every_interpolation_is_well_formed() {
    let compose = compose();
    assert!(
        env_value(service(&compose, "postgres"), "POSTGRES_PASSWORD")
            .starts_with("${POSTGRES_PASSWORD:?"),
        "the password comes from the shell and is required"
    );
    assert_eq!(
        environment(service(&compose, "backend"))
            .into_iter()
            .find(|(name, _)| name == "JWT_SECRET"),
        Some(("JWT_SECRET".into(), None)),
        "JWT_SECRET is passed through, never fixed"
    );
    // Compose rejects a `$` that starts neither `$$`, `${NAME...}` nor `$NAME`.
    for (number, line) in read("docker-compose.yml").lines().enumerate() {
        let code = line.split(" #").next().unwrap();
        if code.trim_start().starts_with('#') {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find('$') {
            let after = &rest[at + 1..];
            let well_formed = after.starts_with('$')
                || after.starts_with('{') && after.contains('}')
                || after.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
            assert!(
                well_formed,
                "docker-compose.yml:{}: bad interpolation",
                number + 1
            );
            rest = after.strip_prefix('$').unwrap_or(after);
        }
    }
}

#[test]
fn the_dockerfile_builds_and_ships_every_binary() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|line| line.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "a builder and a runtime stage: {stages:?}");
    assert!(stages[0].starts_with("FROM rust:1") && stages[0].ends_with(" AS builder"));
    assert_eq!(stages[1], "FROM debian:bookworm-slim");
    assert!(
        stages[0].contains("bookworm"),
        "the builder's glibc must not be newer than the runtime's"
    );
    assert!(dockerfile.contains("cargo build --release --locked --workspace"));
    for binary in workspace_binaries() {
        assert!(
            dockerfile.contains(&format!("target/release/{binary} ")),
            "the image ships {binary}"
        );
    }
    assert!(dockerfile.contains("COPY --from=builder /out/ /usr/local/bin/"));
    assert!(
        read(".dockerignore").lines().any(|line| line == "target"),
        "the build context leaves out target/"
    );
}
