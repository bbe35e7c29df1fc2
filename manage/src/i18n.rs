//! The console's words in Indonesian and English. Every string a page shows comes from a
//! catalogue: the shared one here and each daemon's own; a test checks that every key a
//! template uses is in a catalogue, in both languages.

/// The console's languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Id,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::Id => "id",
            Lang::En => "en",
        }
    }

    /// From the `lintas-lang` cookie, else the browser's first preference of the two,
    /// else Indonesian.
    pub fn of(headers: &axum::http::HeaderMap) -> Lang {
        if let Some(code) = crate::web::cookie(headers, LANG_COOKIE) {
            return if code == "en" { Lang::En } else { Lang::Id };
        }
        let accept = headers
            .get(axum::http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        for tag in accept.split(',') {
            let tag = tag
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if tag.starts_with("id") {
                return Lang::Id;
            }
            if tag.starts_with("en") {
                return Lang::En;
            }
        }
        Lang::Id
    }
}

/// The cookie that keeps the language chosen.
pub const LANG_COOKIE: &str = "lintas-lang";

/// Key, English, Indonesian.
pub type Entry = (&'static str, &'static str, &'static str);

/// What every console shows.
pub const SHARED: &[Entry] = &[
    ("skip", "Skip to content", "Lewati ke isi"),
    ("login", "Log in", "Masuk"),
    ("logout", "Log out", "Keluar"),
    ("user_name", "User name", "Nama pengguna"),
    ("password", "Password", "Kata sandi"),
    ("login_title", "Log in to the console", "Masuk ke konsol"),
    ("login_failed", "Login refused", "Gagal masuk"),
    ("signed_in_as", "Logged in as", "Masuk sebagai"),
    ("roles", "Roles", "Peran"),
    ("language", "Language", "Bahasa"),
    ("refused", "Refused", "Ditolak"),
    ("add", "Add", "Tambah"),
    ("remove", "Remove", "Hapus"),
    ("search", "Search", "Cari"),
    ("none", "None", "Tidak ada"),
    ("yes", "yes", "ya"),
    ("no", "no", "tidak"),
    ("next_page", "Next page", "Halaman berikutnya"),
    ("users", "Users", "Pengguna"),
    ("audit_log", "Admin audit log", "Log audit admin"),
    ("when", "When", "Waktu"),
    ("who", "Who", "Siapa"),
    ("from", "From", "Dari"),
    ("via", "Through", "Melalui"),
    ("action", "Action", "Tindakan"),
    ("target", "Target", "Sasaran"),
    ("outcome", "Outcome", "Hasil"),
    ("export", "Export", "Ekspor"),
    ("created", "Created", "Dibuat"),
    ("new_user", "New user", "Pengguna baru"),
    ("api_keys", "API keys", "Kunci API"),
    ("new_api_key", "New API key", "Kunci API baru"),
    ("key_purpose", "What it is for", "Untuk apa"),
    (
        "key_once",
        "The new key (shown once)",
        "Kunci baru (ditampilkan sekali)",
    ),
    ("revoke_key", "Revoke", "Cabut"),
    ("needs_role", "This needs the role", "Ini memerlukan peran"),
    ("user_added", "User added:", "Pengguna ditambahkan:"),
    ("user_removed", "User removed:", "Pengguna dihapus:"),
    ("key_revoked", "API key revoked:", "Kunci API dicabut:"),
];

/// A catalogue lookup for one language: the daemon's entries first, then the shared ones.
#[derive(Debug, Clone, Copy)]
pub struct Tr {
    pub lang: Lang,
    pub own: &'static [Entry],
}

impl Tr {
    /// The words for `key`; the key itself when no catalogue has it (a test keeps that
    /// from happening).
    pub fn t(&self, key: &str) -> &'static str {
        self.own
            .iter()
            .chain(SHARED)
            .find(|(k, _, _)| *k == key)
            .map_or("?", |(_, en, id)| match self.lang {
                Lang::En => en,
                Lang::Id => id,
            })
    }

    pub fn has(&self, key: &str) -> bool {
        self.own.iter().chain(SHARED).any(|(k, _, _)| *k == key)
    }
}

/// The keys templates use (`tr.t("key")`) in `text`.
pub fn keys_used(text: &str) -> Vec<&str> {
    text.match_indices("tr.t(\"")
        .filter_map(|(at, m)| {
            let rest = &text[at + m.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

/// Checks a catalogue: no key twice, no empty words. Returns the problems.
pub fn check(entries: &[Entry]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, (k, en, id)) in entries.iter().enumerate() {
        if entries[..i].iter().any(|(other, _, _)| other == k) {
            problems.push(format!("{k} twice"));
        }
        if en.is_empty() || id.is_empty() {
            problems.push(format!("{k} has no words in one language"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, header};

    #[test]
    fn the_language_follows_cookie_then_browser() {
        let cases: &[(Option<&str>, Option<&str>, Lang)] = &[
            (None, None, Lang::Id),
            (None, Some("en-GB,en;q=0.9"), Lang::En),
            (None, Some("id-ID,id;q=0.9,en;q=0.8"), Lang::Id),
            (None, Some("fr-FR, en;q=0.5"), Lang::En),
            (None, Some("fr-FR"), Lang::Id),
            (Some("lintas-lang=en"), Some("id"), Lang::En),
            (Some("lintas-lang=id"), Some("en"), Lang::Id),
        ];
        for (cookie, accept, expected) in cases {
            let mut h = HeaderMap::new();
            if let Some(c) = cookie {
                h.insert(header::COOKIE, HeaderValue::from_str(c).unwrap());
            }
            if let Some(a) = accept {
                h.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_str(a).unwrap());
            }
            assert_eq!(Lang::of(&h), *expected, "{cookie:?} {accept:?}");
        }
    }

    #[test]
    fn the_shared_catalogue_and_templates_agree() {
        assert_eq!(check(SHARED), Vec::<String>::new());
        let tr = Tr {
            lang: Lang::Id,
            own: &[],
        };
        for (name, text) in crate::console::TEMPLATES {
            for key in keys_used(text) {
                assert!(tr.has(key), "{name} uses {key}, which no catalogue has");
            }
        }
        assert_eq!(tr.t("logout"), "Keluar");
        assert_eq!(
            Tr {
                lang: Lang::En,
                own: &[("logout", "Sign out", "x")]
            }
            .t("logout"),
            "Sign out"
        );
        assert_eq!(
            keys_used(r#"{{ tr.t("a") }} x {{ tr.t("b_c") }}"#),
            ["a", "b_c"]
        );
    }
}
