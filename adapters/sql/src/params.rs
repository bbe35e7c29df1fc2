//! Named parameters (`:field`) in a query, replaced by positional ones (`?1` for SQLite,
//! `$1` for PostgreSQL). Quoted strings, quoted identifiers, comments and `::` casts are
//! left alone, so a query is never assembled from values: only placeholders move.

/// Placeholder style of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `?1`, `?2`, …
    Question,
    /// `$1`, `$2`, …
    Dollar,
}

/// A query with positional placeholders and the field name behind each position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Positional {
    pub sql: String,
    pub names: Vec<String>,
}

/// Rewrites `:name` placeholders; the same name used twice gets the same position.
pub fn positional(query: &str, style: Style) -> Result<Positional, String> {
    let chars: Vec<char> = query.chars().collect();
    let mut sql = String::with_capacity(query.len());
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' | '`' => {
                // A quoted string or identifier; a doubled quote stays inside it.
                sql.push(c);
                i += 1;
                loop {
                    let Some(&d) = chars.get(i) else {
                        return Err(format!("the query has an unterminated {c} quote"));
                    };
                    sql.push(d);
                    i += 1;
                    if d == c {
                        if chars.get(i) == Some(&c) {
                            sql.push(c);
                            i += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                while i < chars.len() && chars[i] != '\n' {
                    sql.push(chars[i]);
                    i += 1;
                }
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                let end = (i + 2..chars.len().saturating_sub(1))
                    .find(|&j| chars[j] == '*' && chars[j + 1] == '/')
                    .ok_or("the query has an unterminated /* comment")?;
                sql.extend(&chars[i..end + 2]);
                i = end + 2;
            }
            ':' if chars.get(i + 1) == Some(&':') => {
                sql.push_str("::");
                i += 2;
            }
            ':' if chars
                .get(i + 1)
                .is_some_and(|d| d.is_ascii_alphabetic() || *d == '_') =>
            {
                let start = i + 1;
                let mut end = start;
                while chars
                    .get(end)
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '_')
                {
                    end += 1;
                }
                let name: String = chars[start..end].iter().collect();
                let position = match names.iter().position(|n| *n == name) {
                    Some(p) => p + 1,
                    None => {
                        names.push(name);
                        names.len()
                    }
                };
                match style {
                    Style::Question => sql.push_str(&format!("?{position}")),
                    Style::Dollar => sql.push_str(&format!("${position}")),
                }
                i = end;
            }
            '?' | '$' if c == '?' || chars.get(i + 1).is_some_and(char::is_ascii_digit) => {
                return Err(format!(
                    "the query uses a positional parameter ('{c}'); name request fields instead, as :field"
                ));
            }
            _ => {
                sql.push(c);
                i += 1;
            }
        }
    }
    Ok(Positional { sql, names })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_positions_outside_quotes_comments_and_casts() {
        let p = positional(
            "SELECT nama, ':bukan' AS \"x:y\", umur::text -- :komentar\n\
             FROM siswa WHERE npsn = :npsn AND (kelas = :kelas OR :kelas = 0) /* :juga */ AND n = 'it''s :no'",
            Style::Dollar,
        )
        .unwrap();
        assert_eq!(
            p.sql,
            "SELECT nama, ':bukan' AS \"x:y\", umur::text -- :komentar\n\
             FROM siswa WHERE npsn = $1 AND (kelas = $2 OR $2 = 0) /* :juga */ AND n = 'it''s :no'"
        );
        assert_eq!(p.names, ["npsn", "kelas"]);
        let q = positional("SELECT * FROM t WHERE a = :a_1", Style::Question).unwrap();
        assert_eq!(q.sql, "SELECT * FROM t WHERE a = ?1");
    }

    #[test]
    fn positional_parameters_and_open_quotes_are_refused() {
        for (query, want) in [
            ("SELECT * FROM t WHERE a = ?", "positional parameter"),
            ("SELECT * FROM t WHERE a = $1", "positional parameter"),
            ("SELECT * FROM t WHERE a = 'x", "unterminated ' quote"),
            ("SELECT /* x", "unterminated /* comment"),
        ] {
            let err = positional(query, Style::Question).unwrap_err();
            assert!(err.contains(want), "{query}: {err}");
        }
    }
}
