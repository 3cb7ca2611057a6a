//! Token authentication and per-token permissions.
//!
//! A listener with tokens lets a connection in only once it presented one
//! of them, either as `Authorization: Bearer TOKEN` on the upgrade or in
//! `hello.token` (its first frame). The decision is taken once per
//! connection; what the token allows is compiled into [`Patterns`] so the
//! per-submit check is a table index and, at most, a hash lookup (a token
//! allowed everything skips it entirely).
//!
//! `mc:*` (meta-control: `mc:tune`, `mc:scale`, `mc:spawn`) changes a
//! running system, so a token reaches it only by naming the group: `mc:*`
//! or `mc:ELEMENT`. `*`, `*:*` and `*:ELEMENT` cover the other five groups
//! alone. A packet admitted under a token that does not grant all of `mc:*`
//! is marked (`pf.no_mc`), so that the calls made on its behalf, however
//! deep, cannot reach `mc:*` either ([`Grant::may_reach_mc`]).
//!
//! Tokens are compared in constant time: both sides are hashed (SHA-256,
//! which also hides the length) and every entry of the table is compared
//! with `subtle`, without stopping at a match. Token values never appear in
//! an error message, a `Debug` output or a log line: only token names do.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::error::{ErrorCode, PfError};
pub use crate::key_style::KeyStyle;
use crate::packet::{Element, Group};

/// Shortest token accepted in a tokens file or a [`TokenSpec`].
pub const MIN_TOKEN_LEN: usize = 16;

/// One token a listener accepts, and what a connection presenting it may do.
///
/// Exactly one of `token` and `token_sha256` is set. Patterns are `*`
/// (everything but `mc`) or `GROUP:ELEMENT`, where `GROUP` is a group code
/// or `*` (every group but `mc`) and `ELEMENT` is a name, `*`, or a prefix
/// ending in `*` (`df:user.*`). `mc` keys are allowed only by patterns
/// naming the group (`mc:*`, `mc:scale`). An empty list allows nothing.
///
/// `Debug` never shows the token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TokenSpec {
    /// Name used in error messages and logs (never the token itself).
    pub name: String,
    /// The secret a peer presents (at least [`MIN_TOKEN_LEN`] bytes).
    pub token: Option<String>,
    /// Instead of `token`: the hex SHA-256 of the token, so that the file
    /// holding the table need not hold the secret.
    pub token_sha256: Option<String>,
    /// Keys this token may submit (`df:*`, `*`, `cf:start`).
    pub submit: Vec<String>,
    /// Keys this token may serve, that is announce in `hello` (and, for a
    /// peer that sends no `hello`, be routed as a default route).
    pub serve: Vec<String>,
    /// May open the node's dashboard (`/ui/`): its peers, handlers,
    /// traffic, failed packets and traces. Off unless set.
    pub dashboard: bool,
}

impl fmt::Debug for TokenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSpec")
            .field("name", &self.name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_sha256", &self.token_sha256.as_ref().map(|_| "<redacted>"))
            .field("submit", &self.submit)
            .field("serve", &self.serve)
            .field("dashboard", &self.dashboard)
            .finish()
    }
}

impl TokenSpec {
    /// A token allowed to submit the keys matching `submit` and serve those
    /// matching `serve` (patterns as described above; checked when the
    /// listener starts).
    pub fn new(
        name: impl Into<String>,
        token: impl Into<String>,
        submit: &[&str],
        serve: &[&str],
    ) -> TokenSpec {
        let patterns = |list: &[&str]| list.iter().map(|p| p.to_string()).collect();
        TokenSpec {
            name: name.into(),
            token: Some(token.into()),
            token_sha256: None,
            submit: patterns(submit),
            serve: patterns(serve),
            dashboard: false,
        }
    }

    /// A token allowed to submit and serve everything but `mc:*` (which a
    /// token reaches only by naming it: [`allow_all_and_mc`](Self::allow_all_and_mc)).
    pub fn allow_all(name: impl Into<String>, token: impl Into<String>) -> TokenSpec {
        TokenSpec::new(name, token, &["*"], &["*"])
    }

    /// A token allowed to submit and serve everything, `mc:*` included.
    pub fn allow_all_and_mc(name: impl Into<String>, token: impl Into<String>) -> TokenSpec {
        TokenSpec::new(name, token, &["*", "mc:*"], &["*", "mc:*"])
    }

    /// The same token, allowed to open the dashboard too.
    pub fn with_dashboard(self) -> TokenSpec {
        TokenSpec { dashboard: true, ..self }
    }

    /// Reads a tokens file: TOML when its name ends in `.toml`, JSON when
    /// it ends in `.json`. Both hold a `tokens` array of tables/objects with
    /// the fields of [`TokenSpec`] (see `docs/security.md`). Errors name the
    /// file, the entry and the field, never a token's value.
    pub fn load(path: impl AsRef<Path>) -> Result<Vec<TokenSpec>, PfError> {
        let path = path.as_ref();
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(format!("cannot read tokens file {shown}: {e}")))?;
        let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        let document: Value = match extension.as_deref() {
            Some("toml") => toml::from_str(&text).map_err(|e| {
                // The span, not the error's Display: that quotes the line,
                // which may hold a token.
                let (line, column) = e.span().map_or((0, 0), |s| line_column(&text, s.start));
                bad(format!(
                    "tokens file {shown}: TOML syntax error at line {line}, column {column}: {}",
                    e.message()
                ))
            })?,
            Some("json") => serde_json::from_str(&text).map_err(|e| {
                bad(format!(
                    "tokens file {shown}: JSON syntax error at line {}, column {}",
                    e.line(),
                    e.column()
                ))
            })?,
            _ => return Err(bad(format!("tokens file {shown}: the name must end in .toml or .json"))),
        };
        let specs = specs_of(&document).map_err(|why| bad(format!("tokens file {shown}: {why}")))?;
        // Validate now, so that a bad file is reported with its name.
        AuthTable::new(&specs).map_err(|e| bad(format!("tokens file {shown}: {}", e.message)))?;
        Ok(specs)
    }

    /// Token entries given in code, as a binding received them (converted
    /// to JSON values): an array of maps with the keys `name`, `token` or
    /// `token_sha256` (spelled as `style` says), `submit`, `serve`. Checked
    /// as a tokens file is; messages name `tokens[i].field`, never a
    /// token's value. `null` is no tokens.
    pub fn parse_list(list: &Value, style: KeyStyle) -> Result<Vec<TokenSpec>, PfError> {
        let entries = match list {
            Value::Null => return Ok(Vec::new()),
            Value::Array(entries) => entries,
            other => return Err(bad(format!("tokens must be a list of token maps, got {}", kind(other)))),
        };
        let specs = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| spec_of(entry, i, style, "a map"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        AuthTable::build(&specs, style)?;
        Ok(specs)
    }
}

fn bad(message: String) -> PfError {
    PfError::new(ErrorCode::BadRequest, message)
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The `tokens` array of a parsed file, checked field by field with
/// messages that quote field names and patterns but never token values.
fn specs_of(document: &Value) -> Result<Vec<TokenSpec>, String> {
    let root = document.as_object().ok_or("expected a table with a `tokens` array")?;
    if let Some(other) = root.keys().find(|k| *k != "tokens") {
        return Err(format!("unknown top-level field {other:?}; expected only `tokens`"));
    }
    let entries = root.get("tokens").and_then(Value::as_array).ok_or("expected a `tokens` array")?;
    entries.iter().enumerate().map(|(i, entry)| spec_of(entry, i, KeyStyle::Snake, "a table")).collect()
}

/// One entry of a tokens list; `container` names what an entry must be
/// (a file's "a table", a binding's "a map").
fn spec_of(entry: &Value, i: usize, style: KeyStyle, container: &str) -> Result<TokenSpec, String> {
    let at = format!("tokens[{i}]");
    let sha_key = style.sha256_key();
    let table = entry.as_object().ok_or_else(|| {
        format!(
            "{at} must be {container} (name, token or {sha_key}, submit, serve, dashboard), got {}",
            kind(entry)
        )
    })?;
    let flag = |field: &str| -> Result<bool, String> {
        match table.get(field) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(format!("{at}.{field} must be true or false, got {other}")),
        }
    };
    let string = |field: &str, secret: bool| -> Result<Option<String>, String> {
        match table.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) if secret => Err(format!("{at}.{field} must be a string, got {}", kind(other))),
            Some(other) => Err(format!("{at}.{field} must be a string, got {other}")),
        }
    };
    let list = |field: &str| -> Result<Vec<String>, String> {
        match table.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|p| {
                    p.as_str().map(str::to_owned).ok_or(format!("{at}.{field} must hold strings, got {p}"))
                })
                .collect(),
            Some(other) => Err(format!("{at}.{field} must be an array of patterns, got {other}")),
        }
    };
    if let Some(other) = table
        .keys()
        .find(|k| !matches!(k.as_str(), "name" | "token" | "submit" | "serve" | "dashboard") && *k != sha_key)
    {
        return Err(format!(
            "{at}: unknown field {other:?}; expected name, token or {sha_key}, submit, serve, dashboard"
        ));
    }
    Ok(TokenSpec {
        name: string("name", false)?.ok_or(format!("{at}.name is missing"))?,
        token: string("token", true)?,
        token_sha256: string(sha_key, true)?,
        submit: list("submit")?,
        serve: list("serve")?,
        dashboard: flag("dashboard")?,
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a map",
    }
}

/// Compiled `GROUP:ELEMENT` patterns: one rule per group.
#[derive(Debug, Default)]
pub(crate) struct Patterns {
    groups: [GroupRule; 6],
}

#[derive(Debug, Default)]
struct GroupRule {
    any: bool,
    exact: foldhash::HashSet<Box<str>>,
    prefixes: Vec<Box<str>>,
}

impl GroupRule {
    fn allows(&self, element: &str) -> bool {
        self.any || self.exact.contains(element) || self.prefixes.iter().any(|p| element.starts_with(&**p))
    }
}

/// The group a token reaches only by naming it (see the module's docs).
const NAMED_ONLY: Group = Group::MetaCompute;

impl Patterns {
    /// Compiles `patterns`; `None` when they allow everything (`*` and
    /// `mc:*`), so that callers skip the check.
    fn compile(patterns: &[String]) -> Result<Option<Patterns>, String> {
        let mut compiled = Patterns::default();
        // `*` and `*:…` stand for every group a wildcard covers.
        let wildcard_groups = || Group::ALL.into_iter().filter(|g| *g != NAMED_ONLY);
        for pattern in patterns {
            let pattern = if pattern == "*" { "*:*" } else { pattern.as_str() };
            let (group, element) =
                pattern.split_once(':').ok_or(format!("pattern {pattern:?} is not `*` or GROUP:ELEMENT"))?;
            let groups: Vec<Group> = if group == "*" {
                wildcard_groups().collect()
            } else {
                vec![Group::parse(group).map_err(|e| format!("pattern {pattern:?}: {}", e.message))?]
            };
            for g in groups {
                let rule = &mut compiled.groups[g.index()];
                if element == "*" {
                    rule.any = true;
                } else if let Some(prefix) = element.strip_suffix('*') {
                    Element::new(prefix).map_err(|_| {
                        format!("pattern {pattern:?}: the part before `*` must be 1-64 characters of [A-Za-z0-9_.-]")
                    })?;
                    rule.prefixes.push(prefix.into());
                } else {
                    Element::new(element).map_err(|e| format!("pattern {pattern:?}: {}", e.message))?;
                    rule.exact.insert(element.into());
                }
            }
        }
        let everything = compiled.groups.iter().all(|rule| rule.any);
        Ok(if everything { None } else { Some(compiled) })
    }

    pub(crate) fn allows(&self, group: Group, element: &str) -> bool {
        self.groups[group.index()].allows(element)
    }

    /// Whether every key of `group` is allowed.
    fn allows_all_of(&self, group: Group) -> bool {
        self.groups[group.index()].any
    }
}

/// What a connection that presented a valid token may do.
#[derive(Debug)]
pub(crate) struct Grant {
    /// The token's name (for messages).
    pub(crate) name: Box<str>,
    /// `None`: may submit anything.
    pub(crate) submit: Option<Patterns>,
    /// `None`: may serve anything.
    pub(crate) serve: Option<Patterns>,
    /// May open the dashboard.
    pub(crate) dashboard: bool,
}

impl Grant {
    pub(crate) fn may_submit(&self, group: Group, element: &str) -> bool {
        self.submit.as_ref().is_none_or(|p| p.allows(group, element))
    }

    pub(crate) fn may_serve(&self, group: Group, element: &str) -> bool {
        self.serve.as_ref().is_none_or(|p| p.allows(group, element))
    }

    /// Whether the calls made on behalf of a packet this token submitted
    /// may reach `mc:*`: only when it grants the whole group (`mc:*`). The
    /// node marks the packets of any other token (`pf.no_mc`).
    pub(crate) fn may_reach_mc(&self) -> bool {
        self.submit.as_ref().is_none_or(|p| p.allows_all_of(NAMED_ONLY))
    }

    /// Whether it may submit every key outside `mc:*` (as `*` does).
    pub(crate) fn may_submit_all_but_mc(&self) -> bool {
        self.submit
            .as_ref()
            .is_none_or(|p| Group::ALL.into_iter().all(|g| g == NAMED_ONLY || p.allows_all_of(g)))
    }
}

/// The tokens a listener accepts, by SHA-256 digest.
pub(crate) struct AuthTable {
    entries: Vec<([u8; 32], Arc<Grant>)>,
}

impl fmt::Debug for AuthTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|(_, g)| &g.name)).finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl AuthTable {
    /// Compiles and checks `specs`: names present and unique, exactly one
    /// secret each, long enough, no two tokens alike, valid patterns.
    pub(crate) fn new(specs: &[TokenSpec]) -> Result<AuthTable, PfError> {
        AuthTable::build(specs, KeyStyle::Snake)
    }

    /// [`new`](Self::new), with messages naming keys as `style` spells them.
    fn build(specs: &[TokenSpec], style: KeyStyle) -> Result<AuthTable, PfError> {
        let sha_key = style.sha256_key();
        let mut entries: Vec<([u8; 32], Arc<Grant>)> = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let at = format!("token {:?} (entry {i})", spec.name);
            if spec.name.trim().is_empty() {
                return Err(bad(format!("entry {i}: a token needs a non-empty name")));
            }
            if entries.iter().any(|(_, g)| *g.name == *spec.name) {
                return Err(bad(format!("{at}: the name is used twice")));
            }
            let hashed = match (&spec.token, &spec.token_sha256) {
                (Some(token), None) if token.len() >= MIN_TOKEN_LEN => digest(token),
                (Some(_), None) => {
                    return Err(bad(format!("{at}: the token must be at least {MIN_TOKEN_LEN} bytes")))
                }
                (None, Some(hex)) => hex_digest(hex)
                    .ok_or_else(|| bad(format!("{at}: {sha_key} must be 64 hexadecimal digits")))?,
                _ => return Err(bad(format!("{at}: give exactly one of token and {sha_key}"))),
            };
            if let Some((_, other)) = entries.iter().find(|(d, _)| bool::from(d.ct_eq(&hashed))) {
                return Err(bad(format!("{at}: the same token as {:?}", other.name)));
            }
            let submit =
                Patterns::compile(&spec.submit).map_err(|why| bad(format!("{at}: submit: {why}")))?;
            let serve = Patterns::compile(&spec.serve).map_err(|why| bad(format!("{at}: serve: {why}")))?;
            entries.push((
                hashed,
                Arc::new(Grant { name: spec.name.as_str().into(), submit, serve, dashboard: spec.dashboard }),
            ));
        }
        Ok(AuthTable { entries })
    }

    /// The grant of `token`, if it is one of the table's. Takes the same
    /// time whichever entry matches, or none.
    pub(crate) fn check(&self, token: &str) -> Option<Arc<Grant>> {
        let presented = digest(token);
        let mut found = u64::MAX;
        for (i, (known, _)) in self.entries.iter().enumerate() {
            found.conditional_assign(&(i as u64), known.ct_eq(&presented));
        }
        self.entries.get(found as usize).map(|(_, grant)| grant.clone())
    }
}

/// The token of an `Authorization: Bearer TOKEN` header value.
pub(crate) fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_groups_elements_wildcards_and_prefixes() {
        let p = Patterns::compile(&["df:*".into(), "cf:start".into(), "*:user.*".into()]).unwrap().unwrap();
        assert!(p.allows(Group::DataFlow, "anything"));
        assert!(p.allows(Group::ControlFlow, "start"));
        assert!(!p.allows(Group::ControlFlow, "stop"));
        assert!(p.allows(Group::EventDriven, "user.created"));
        assert!(!p.allows(Group::EventDriven, "users"));
        assert!(!p.allows(Group::ResourceMgmt, "lock"));
        let everything = Patterns::compile(&["*".into(), "mc:*".into()]).unwrap();
        assert!(everything.is_none(), "* with mc:* skips the check");
        let nothing = Patterns::compile(&[]).unwrap().unwrap();
        assert!(Group::ALL.iter().all(|g| !nothing.allows(*g, "x")));
    }

    #[test]
    fn wildcards_never_cover_mc_a_pattern_must_name_it() {
        for wildcard in ["*", "*:*"] {
            let p = Patterns::compile(&[wildcard.into()]).unwrap().expect("mc is still checked");
            for g in Group::ALL.into_iter().filter(|g| *g != Group::MetaCompute) {
                assert!(p.allows(g, "anything"), "{wildcard} allows {g}:anything");
            }
            for element in ["tune", "scale", "spawn"] {
                assert!(!p.allows(Group::MetaCompute, element), "{wildcard} must not allow mc:{element}");
            }
        }
        let p = Patterns::compile(&["*:scale".into(), "*:tu*".into()]).unwrap().unwrap();
        assert!(p.allows(Group::DataFlow, "scale") && p.allows(Group::ControlFlow, "tune"));
        assert!(!p.allows(Group::MetaCompute, "scale") && !p.allows(Group::MetaCompute, "tune"));
        let named = Patterns::compile(&["mc:scale".into()]).unwrap().unwrap();
        assert!(named.allows(Group::MetaCompute, "scale"));
        assert!(!named.allows(Group::MetaCompute, "tune"));
        let prefix = Patterns::compile(&["mc:sp*".into()]).unwrap().unwrap();
        assert!(prefix.allows(Group::MetaCompute, "spawn") && !prefix.allows(Group::MetaCompute, "tune"));
        let group = Patterns::compile(&["mc:*".into()]).unwrap().unwrap();
        assert!(group.allows(Group::MetaCompute, "tune") && !group.allows(Group::DataFlow, "x"));
    }

    #[test]
    fn only_a_token_granting_all_of_mc_lets_its_packets_calls_reach_mc() {
        let grant = |submit: &[&str]| {
            let table = AuthTable::new(&[TokenSpec::new("t", "the-token-0123456789", submit, &[])]).unwrap();
            table.check("the-token-0123456789").unwrap()
        };
        let all = grant(&["*"]);
        assert!(!all.may_submit(Group::MetaCompute, "tune") && all.may_submit(Group::DataFlow, "x"));
        assert!(!all.may_reach_mc(), "* does not grant mc");
        assert!(all.may_submit_all_but_mc(), "* keeps its direct paths");
        let admin = grant(&["*", "mc:*"]);
        assert!(admin.submit.is_none() && admin.may_reach_mc() && admin.may_submit_all_but_mc());
        assert!(admin.may_submit(Group::MetaCompute, "tune"));
        let scale_only = grant(&["*", "mc:scale"]);
        assert!(scale_only.may_submit(Group::MetaCompute, "scale"));
        assert!(!scale_only.may_submit(Group::MetaCompute, "tune"));
        assert!(!scale_only.may_reach_mc(), "one mc element is not the group: its calls are barred");
        let mc_only = grant(&["mc:*"]);
        assert!(mc_only.may_reach_mc() && !mc_only.may_submit_all_but_mc());
        let some = grant(&["df:*"]);
        assert!(!some.may_reach_mc() && !some.may_submit_all_but_mc());
        let serve = AuthTable::new(&[TokenSpec::allow_all("s", "serve-token-0123456789")]).unwrap();
        let serve = serve.check("serve-token-0123456789").unwrap();
        assert!(serve.may_serve(Group::DataFlow, "x") && !serve.may_serve(Group::MetaCompute, "tune"));
        let both = AuthTable::new(&[TokenSpec::allow_all_and_mc("b", "both-token-0123456789")]).unwrap();
        let both = both.check("both-token-0123456789").unwrap();
        assert!(both.may_serve(Group::MetaCompute, "tune") && both.may_reach_mc());
    }

    #[test]
    fn bad_patterns_are_named() {
        for (pattern, says) in [
            ("df", "is not `*` or GROUP:ELEMENT"),
            ("zz:x", "group must be one of"),
            ("df:a b", "element must be"),
            ("df:*x*", "before `*`"),
            ("df:", "element must be"),
        ] {
            let err = Patterns::compile(&[pattern.into()]).unwrap_err();
            assert!(err.contains(pattern) && err.contains(says), "{pattern}: {err}");
        }
    }

    #[test]
    fn the_table_finds_the_right_grant_and_refuses_others() {
        let table = AuthTable::new(&[
            TokenSpec::new("reader", "reader-token-0123456789", &["df:get"], &[]),
            TokenSpec::new("admin", "admin-token-0123456789ab", &["*"], &["*"]),
        ])
        .unwrap();
        assert_eq!(&*table.check("admin-token-0123456789ab").unwrap().name, "admin");
        let reader = table.check("reader-token-0123456789").unwrap();
        assert!(reader.may_submit(Group::DataFlow, "get"));
        assert!(!reader.may_submit(Group::DataFlow, "put"));
        assert!(!reader.may_serve(Group::DataFlow, "get"));
        assert!(table.check("reader-token-012345678").is_none(), "a prefix is not the token");
        assert!(table.check("").is_none());
    }

    #[test]
    fn a_hashed_token_is_accepted_like_a_plain_one() {
        let hex: String = digest("hashed-token-0123456789").iter().map(|b| format!("{b:02x}")).collect();
        let table = AuthTable::new(&[TokenSpec {
            name: "svc".into(),
            token_sha256: Some(hex.to_uppercase()),
            ..TokenSpec::default()
        }])
        .unwrap();
        assert_eq!(&*table.check("hashed-token-0123456789").unwrap().name, "svc");
    }

    #[test]
    fn bad_tables_are_refused_without_showing_tokens() {
        let short = AuthTable::new(&[TokenSpec::new("a", "short", &[], &[])]).unwrap_err();
        assert!(short.message.contains("at least 16"), "{}", short.message);
        let twice = AuthTable::new(&[
            TokenSpec::new("a", "same-token-0123456789", &[], &[]),
            TokenSpec::new("b", "same-token-0123456789", &[], &[]),
        ])
        .unwrap_err();
        assert!(twice.message.contains("the same token as \"a\""), "{}", twice.message);
        assert!(!twice.message.contains("same-token"));
        let names = AuthTable::new(&[
            TokenSpec::new("a", "one-token-0123456789", &[], &[]),
            TokenSpec::new("a", "two-token-0123456789", &[], &[]),
        ])
        .unwrap_err();
        assert!(names.message.contains("used twice"));
        let neither = AuthTable::new(&[TokenSpec { name: "x".into(), ..TokenSpec::default() }]).unwrap_err();
        assert!(neither.message.contains("exactly one of token and token_sha256"));
        let pattern =
            AuthTable::new(&[TokenSpec::new("p", "pattern-token-0123456789", &["df"], &[])]).unwrap_err();
        assert!(pattern.message.contains("submit: pattern \"df\""), "{}", pattern.message);
    }

    #[test]
    fn debug_output_never_shows_a_token() {
        let s = TokenSpec::new("visible-name", "very-secret-token-value", &["*"], &[]);
        let shown = format!("{s:?}");
        assert!(shown.contains("visible-name") && !shown.contains("very-secret"), "{shown}");
        let table = AuthTable::new(&[s]).unwrap();
        assert!(!format!("{table:?}").contains("very-secret"));
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer   abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pf-auth-{}-{}", std::process::id(), name));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn toml_and_json_files_load_alike() {
        let toml = write(
            "tokens.toml",
            r#"
[[tokens]]
name = "billing"
token = "billing-token-0123456789"
submit = ["df:*"]
serve = ["df:invoice"]
dashboard = true
"#,
        );
        let json = write(
            "tokens.json",
            r#"{"tokens": [{"name": "billing", "token": "billing-token-0123456789",
                "submit": ["df:*"], "serve": ["df:invoice"], "dashboard": true}]}"#,
        );
        let a = TokenSpec::load(&toml).unwrap();
        let b = TokenSpec::load(&json).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0].submit, vec!["df:*"]);
        assert!(a[0].dashboard, "dashboard = true is read");
    }

    #[test]
    fn file_errors_name_the_file_and_the_field_but_never_the_token() {
        let cases = [
            (
                "typo.toml",
                "[[tokens]]\nname = \"a\"\ntoken = \"typo-token-0123456789\"\nsumbit = []\n",
                "unknown field \"sumbit\"",
            ),
            (
                "syntax.toml",
                "[[tokens]]\nname = \"a\"\ntoken = \"syntax-token-01234\n",
                "TOML syntax error at line 3",
            ),
            (
                "syntax.json",
                "{\"tokens\": [{\"name\": \"a\", \"token\": \"json-token-0123456789\"",
                "JSON syntax error at line 1",
            ),
            (
                "number.json",
                "{\"tokens\": [{\"name\": \"a\", \"token\": 12345678901234567890}]}",
                "tokens[0].token must be a string, got a number",
            ),
            ("tokens.yaml", "tokens: []", "must end in .toml or .json"),
            ("top.json", "{\"token\": []}", "unknown top-level field"),
        ];
        for (name, text, says) in cases {
            let path = write(name, text);
            let err = TokenSpec::load(&path).unwrap_err();
            assert_eq!(err.code, "PF400");
            assert!(err.message.contains(name) && err.message.contains(says), "{name}: {}", err.message);
            assert!(!err.message.contains("0123456789"), "{name} shows the token: {}", err.message);
        }
        let missing = TokenSpec::load("/nonexistent/tokens.toml").unwrap_err();
        assert!(missing.message.contains("cannot read tokens file /nonexistent/tokens.toml"));
    }

    #[test]
    fn lists_given_in_code_are_checked_as_files_are_in_the_hosts_spelling() {
        let list = serde_json::json!([
            {"name": "billing", "token": "billing-token-0123456789", "submit": ["df:*"], "serve": null},
            {"name": "hashed", "tokenSha256": "ab".repeat(32)},
        ]);
        let specs = TokenSpec::parse_list(&list, KeyStyle::Camel).unwrap();
        assert_eq!(specs[0], TokenSpec::new("billing", "billing-token-0123456789", &["df:*"], &[]));
        assert_eq!(specs[1].token_sha256.as_deref(), Some(&*"ab".repeat(32)));
        assert_eq!(TokenSpec::parse_list(&Value::Null, KeyStyle::Snake).unwrap(), vec![]);
        let cases = [
            (serde_json::json!("x"), KeyStyle::Snake, "tokens must be a list of token maps, got a string"),
            (
                serde_json::json!([7]),
                KeyStyle::Camel,
                "tokens[0] must be a map (name, token or tokenSha256, submit, serve, dashboard), got a number",
            ),
            (
                serde_json::json!([{"name": "a", "tokenSha256": "zz"}]),
                KeyStyle::Snake,
                "tokens[0]: unknown field \"tokenSha256\"; expected name, token or token_sha256, submit, serve, dashboard",
            ),
            (
                serde_json::json!([{"name": "a", "tokenSha256": "zz"}]),
                KeyStyle::Camel,
                "token \"a\" (entry 0): tokenSha256 must be 64 hexadecimal digits",
            ),
            (serde_json::json!([{"token": "secret-token-0123456789"}]), KeyStyle::Snake, "tokens[0].name is missing"),
            (
                serde_json::json!([{"name": "a", "token": "secret-token-0123456789", "dashboard": "yes"}]),
                KeyStyle::Snake,
                "tokens[0].dashboard must be true or false, got \"yes\"",
            ),
            (
                serde_json::json!([{"name": "a", "token": 5}]),
                KeyStyle::Snake,
                "tokens[0].token must be a string, got a number",
            ),
            (
                serde_json::json!([{"name": "a", "token": "short-token"}]),
                KeyStyle::Snake,
                "token \"a\" (entry 0): the token must be at least 16 bytes",
            ),
            (
                serde_json::json!([{"name": "a", "token": "secret-token-0123456789", "serve": ["df"]}]),
                KeyStyle::Snake,
                "token \"a\" (entry 0): serve: pattern \"df\" is not `*` or GROUP:ELEMENT",
            ),
        ];
        for (list, style, says) in cases {
            let e = TokenSpec::parse_list(&list, style).unwrap_err();
            assert_eq!((e.code.as_str(), e.message.as_str()), ("PF400", says));
        }
    }
}
