//! The Docker engine checks the agent adds: one per engine that docker
//! checks use without a `docker_engine` check of their own, and the parent
//! of each docker check without one.

use super::{CheckConfig, CheckKind, IMPLICIT_ENGINE_CHECK};

/// The configured checks plus an implicit engine check for each engine
/// that docker checks use without a `docker_engine` check of their own,
/// and every docker check without a parent parented to its engine's
/// check. Idempotent.
pub(super) fn effective_checks(checks: &[CheckConfig]) -> Vec<CheckConfig> {
    let mut out = checks.to_vec();
    // Each engine the docker checks use, in order of first use.
    let mut used: Vec<Option<String>> = Vec::new();
    for c in checks.iter().filter(|c| c.kind == CheckKind::Docker) {
        if !used.contains(&c.engine) {
            used.push(c.engine.clone());
        }
    }
    let mut parents: Vec<(Option<String>, String)> = Vec::new();
    let mut added = 0;
    for engine in used {
        let name = match out
            .iter()
            .find(|c| c.kind == CheckKind::DockerEngine && c.engine == engine)
        {
            Some(e) => e.name.clone(),
            None => {
                let name = implicit_engine_check(engine.as_deref());
                let mut e = CheckConfig::new(&name, CheckKind::DockerEngine);
                e.service = Some(match &engine {
                    None => "docker".to_string(),
                    Some(n) => format!("docker-{n}"),
                });
                e.engine = engine.clone();
                e.fail_after = Some(1);
                out.insert(added, e);
                added += 1;
                name
            }
        };
        parents.push((engine, name));
    }
    for c in out.iter_mut() {
        if c.kind == CheckKind::Docker && c.parent.is_none() {
            c.parent = parents
                .iter()
                .find(|(e, _)| *e == c.engine)
                .map(|(_, n)| n.clone());
        }
    }
    out
}

/// The implicit engine check's name: `docker-engine` for the default
/// engine, `docker-engine-<name>` for one under `[health.engines]`.
pub(super) fn implicit_engine_check(engine: Option<&str>) -> String {
    match engine {
        None => IMPLICIT_ENGINE_CHECK.to_string(),
        Some(n) => format!("{IMPLICIT_ENGINE_CHECK}-{n}"),
    }
}

/// `[health.engines]` names: lowercase letters, digits, `_` and `-` (they
/// become part of check and service names).
pub(crate) fn valid_engine_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

pub(super) fn engine_words(engine: Option<&str>) -> String {
    match engine {
        None => "the default engine".to_string(),
        Some(n) => format!("engine '{n}'"),
    }
}
