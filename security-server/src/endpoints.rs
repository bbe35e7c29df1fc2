//! The endpoints of a REST service (as X-Road calls them): an HTTP method and a path
//! pattern an access grant may be limited to, and the paths a REST call may carry.
//!
//! A pattern is matched against the whole path after the service code, as X-Road's
//! endpoints are: `*` stands for any characters within one segment, `**` for any
//! characters across segments (`/persons/*`, `/persons/*/address`, `/persons/**`,
//! `/files/*.pdf`). A method is an HTTP method, or none (`*`) for any. Paths are
//! compared as sent (percent-encoded), after [`check_path`] has refused the ones a
//! backend could read differently from the bus (dot segments, encoded separators).

/// Longest path pattern.
const MAX_PATTERN: usize = 1024;

/// Whether `method` is an HTTP method name (upper case letters, as RFC 9110 tokens
/// are used in practice).
pub fn check_method(method: &str) -> Result<(), String> {
    if method.is_empty() || method.len() > 32 || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "'{method}' is not an HTTP method: upper case letters, such as GET or POST"
        ));
    }
    Ok(())
}

/// Whether `pattern` is a path pattern: `/` then segments with `*` and `**` wildcards,
/// or `**` alone (any path).
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("path pattern '{pattern}': {why}"));
    if pattern.len() > MAX_PATTERN {
        return bad("too long");
    }
    if pattern == "**" {
        return Ok(());
    }
    let Some(rest) = pattern.strip_prefix('/') else {
        return bad("must start with '/'");
    };
    if rest.split('/').any(|s| s == "." || s == "..") {
        return bad("dot segments are not allowed");
    }
    if pattern
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#' || !b.is_ascii())
    {
        return bad(
            "spaces, control characters, '?', '#' and non-ASCII characters are not allowed (percent-encode them)",
        );
    }
    Ok(())
}

/// Whether `b` may appear in a path as RFC 3986 writes one (`pchar` and `/`; `%`
/// only as the start of an escape, checked by the caller).
fn path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b)
}

/// Checks that every `%` starts a two-digit hex escape.
fn escapes(text: &str) -> bool {
    let b = text.as_bytes();
    b.iter().enumerate().all(|(i, &c)| {
        c != b'%'
            || (b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

/// Refuses a call path a backend could read as another path than the one access was
/// decided on: characters a path cannot hold as such (a raw `?`, `#`, space, non-ASCII,
/// control characters), broken escapes, dot segments (plain, percent-encoded, encoded
/// twice, or followed by `;parameters` that servers strip), an encoded `/` or `\`.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("path '{path}' must start with '/'"));
    };
    if !path.bytes().all(path_byte) || !escapes(path) {
        return Err(format!(
            "path '{path}': only unreserved characters, sub-delimiters, ':', '@' and percent escapes are allowed"
        ));
    }
    for segment in rest.split('/') {
        let once = percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>();
        if once
            .iter()
            .any(|&b| b == b'/' || b == b'\\' || b.is_ascii_control())
        {
            return Err(format!(
                "path '{path}': encoded '/', backslashes and control characters are not allowed"
            ));
        }
        let twice = percent_encoding::percent_decode(&once).collect::<Vec<u8>>();
        for decoded in [&once, &twice] {
            // `..;x` is `..` to servers that strip path parameters.
            let bare = decoded.split(|&b| b == b';').next().unwrap_or_default();
            if bare == b"." || bare == b".." {
                return Err(format!("path '{path}': dot segments are not allowed"));
            }
        }
    }
    Ok(())
}

/// Refuses a query a backend could read differently from the bus: characters a query
/// cannot hold as such (`#`, space, non-ASCII, control characters) and broken escapes.
pub fn check_query(query: &str) -> Result<(), String> {
    if query.bytes().all(|b| path_byte(b) || b == b'?') && escapes(query) {
        Ok(())
    } else {
        Err(format!(
            "query '{query}': only unreserved characters, sub-delimiters, ':', '@', '/', '?' and percent escapes are allowed"
        ))
    }
}

/// Whether a call with `verb` on `path` (already accepted by [`check_path`]) falls
/// under a grant limited to `method` (none: any) and `pattern` (none: any path).
pub fn matches(method: Option<&str>, pattern: Option<&str>, verb: &str, path: &str) -> bool {
    if method.is_some_and(|m| m != verb && m != "*") {
        return false;
    }
    pattern.is_none_or(|p| glob(p.as_bytes(), path.as_bytes()))
}

/// `*` matches within a segment, `**` across segments; everything else literally.
/// Token by token over the set of path positions reachable so far, so the time is
/// bounded by tokens × path length whatever the pattern.
fn glob(pattern: &[u8], path: &[u8]) -> bool {
    let mut reach = vec![false; path.len() + 1];
    reach[0] = true;
    let mut p = pattern;
    while !p.is_empty() {
        let mut next = vec![false; path.len() + 1];
        if p.starts_with(b"**") {
            let stars = p.iter().take_while(|&&b| b == b'*').count();
            p = &p[stars..];
            let mut on = false;
            for j in 0..=path.len() {
                on |= reach[j];
                next[j] = on;
            }
        } else if p[0] == b'*' {
            p = &p[1..];
            let mut on = false;
            for j in 0..=path.len() {
                on |= reach[j];
                next[j] = on;
                if path.get(j) == Some(&b'/') {
                    on = false;
                }
            }
        } else {
            let len = p.iter().position(|&b| b == b'*').unwrap_or(p.len());
            let literal = &p[..len];
            p = &p[len..];
            for j in 0..=path.len() {
                if reach[j] && path[j..].starts_with(literal) {
                    next[j + len] = true;
                }
            }
        }
        reach = next;
    }
    reach[path.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_match_methods_and_path_patterns() {
        let cases = [
            // (method, pattern, verb, path, allowed)
            (None, None, "DELETE", "/anything/at/all", true),
            (Some("GET"), None, "GET", "/persons/1", true),
            (Some("GET"), None, "POST", "/persons/1", false),
            (Some("*"), None, "POST", "/persons/1", true),
            (None, Some("/persons"), "GET", "/persons", true),
            (None, Some("/persons"), "GET", "/persons/1", false),
            (None, Some("/persons/*"), "GET", "/persons/1", true),
            (None, Some("/persons/*"), "GET", "/persons/1/address", false),
            // `*` may match nothing, as X-Road's does.
            (None, Some("/persons/*"), "GET", "/persons/", true),
            (None, Some("/persons/*"), "GET", "/persons", false),
            (
                None,
                Some("/persons/*/address"),
                "GET",
                "/persons/7/address",
                true,
            ),
            (
                None,
                Some("/persons/*/address"),
                "GET",
                "/persons/7/phone",
                false,
            ),
            (None, Some("/persons/**"), "GET", "/persons/", true),
            (None, Some("/persons/**"), "GET", "/persons/7/address", true),
            (None, Some("/persons/**"), "GET", "/personsX/7", false),
            (None, Some("/persons**"), "GET", "/persons", true),
            (None, Some("/files/*.pdf"), "GET", "/files/a.pdf", true),
            (None, Some("/files/*.pdf"), "GET", "/files/a/b.pdf", false),
            (None, Some("/files/**.pdf"), "GET", "/files/a/b.pdf", true),
            (None, Some("/files/**.pdf"), "GET", "/files/a/b.pdfx", false),
            (None, Some("**"), "GET", "", true),
            (None, Some("**"), "GET", "/a/b", true),
            (None, Some("/**"), "GET", "", false),
            (None, Some("/"), "GET", "/", true),
            (None, Some("/"), "GET", "", false),
            (None, Some("/"), "GET", "/x", false),
            (Some("GET"), Some("/persons/**"), "PUT", "/persons/1", false),
            // Compared as sent: an encoded character is not its decoded self.
            (None, Some("/a%20b"), "GET", "/a%20b", true),
            (None, Some("/ab"), "GET", "/a%62", false),
        ];
        for (method, pattern, verb, path, allowed) in cases {
            assert_eq!(
                matches(method, pattern, verb, path),
                allowed,
                "{method:?} {pattern:?} against {verb} {path}"
            );
        }
    }

    #[test]
    fn patterns_methods_and_paths_are_checked() {
        for ok in [
            "/",
            "/persons",
            "/persons/*",
            "/persons/*/address",
            "/**",
            "**",
            "/a/*.pdf",
        ] {
            check_pattern(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, why) in [
            ("persons", "must start with '/'"),
            ("*", "must start with '/'"),
            ("/../x", "dot segments"),
            ("/a?b", "'?'"),
            ("/a b", "spaces"),
        ] {
            let e = check_pattern(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        check_method("GET").unwrap();
        for bad in ["", "get", "G ET", "GET/"] {
            assert!(check_method(bad).is_err(), "{bad}");
        }
        for ok in [
            "",
            "/",
            "/persons/3201",
            "/a%20b/c",
            "/x.json",
            "/a;v=1/b",
            "/~u/@x:1",
        ] {
            check_path(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for ok in ["", "nik=1&x=2", "a=%20b", "q=a/b?c", "k=v;w"] {
            check_query(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["a=1#frag", "a=b c", "a=%zz", "a=%2", "a=\u{e9}"] {
            assert!(check_query(bad).is_err(), "{bad}");
        }
        for (bad, why) in [
            ("/a/../admin", "dot segments"),
            ("/a/%2e%2E/admin", "dot segments"),
            ("/a/.", "dot segments"),
            ("/a%2fb", "encoded '/'"),
            ("/a%5Cb", "encoded '/'"),
            ("/a%0ab", "control"),
            ("x", "start with '/'"),
            ("/files/secret.xlsx?.pdf", "only unreserved"),
            ("/a#b", "only unreserved"),
            ("/a b", "only unreserved"),
            ("/caf\u{e9}", "only unreserved"),
            ("/a%zz", "only unreserved"),
            ("/public/..;/admin", "dot segments"),
            ("/public/%2e%2e;x/admin", "dot segments"),
            ("/public/%252e%252e/admin", "dot segments"),
        ] {
            let e = check_path(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
