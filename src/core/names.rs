//! Names in generated SQL and the gateway's own identifiers: schema-qualified table names,
//! identifier and literal quoting (every identifier and literal dyngate writes into SQL goes
//! through these), and random ids for jobs and temporary objects. Pure functions with tests.

/// A schema-qualified table name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

impl QualifiedName {
    /// For generated SQL: both parts always quoted.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl std::fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Quotes an identifier for generated SQL, always (a name that needs no quotes gets them too).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for generated SQL (standard_conforming_strings on, as PostgreSQL's
/// default; E'' is used when the text holds a backslash so the result is right either way).
pub fn quote_literal(text: &str) -> String {
    let body = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// A random job id for a refresh.
pub fn new_job_id() -> String {
    format!("dyngate-{}", random_hex(8))
}

/// `bytes` random bytes as hex digits (job ids, names of temporary objects).
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the OS random source is available");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        let idents = [("t", "\"t\""), ("My Table", "\"My Table\""), ("a\"b", "\"a\"\"b\""), ("", "\"\"")];
        for (i, q) in idents {
            assert_eq!(quote_ident(i), q);
        }
        let lits = [("x", "'x'"), ("it's", "'it''s'"), ("a\\b", "E'a\\\\b'"), ("'\\", "E'''\\\\'")];
        for (l, q) in lits {
            assert_eq!(quote_literal(l), q);
        }
    }

    #[test]
    fn qualified_names() {
        let n = QualifiedName {
            schema: "my schema".into(),
            name: "t\"x".into(),
        };
        assert_eq!(n.quoted(), "\"my schema\".\"t\"\"x\"");
        assert_eq!(n.to_string(), "my schema.t\"x");
    }

    #[test]
    fn ids() {
        let id = new_job_id();
        assert!(id.starts_with("dyngate-") && id.len() == "dyngate-".len() + 16, "{id}");
        assert_ne!(random_hex(8), random_hex(8));
    }
}
