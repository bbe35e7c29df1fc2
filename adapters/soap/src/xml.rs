//! A small XML tree of a SOAP answer: elements by local name, their text and children.
//! Document type declarations are refused; depth and element count are bounded.

use quick_xml::Reader;
use quick_xml::events::Event;

/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// Most elements in one document.
const MAX_ELEMENTS: usize = 100_000;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Element {
    /// The local name (without namespace prefix).
    pub name: String,
    /// Text and CDATA directly inside, entities resolved.
    pub text: String,
    pub children: Vec<Element>,
    /// `xsi:nil="true"`.
    pub nil: bool,
}

impl Element {
    /// The first element named `name` at or below this one (depth first).
    pub fn find(&self, name: &str) -> Option<&Element> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }
}

fn open(e: &quick_xml::events::BytesStart<'_>) -> Result<Element, String> {
    let mut nil = false;
    for a in e.attributes() {
        let a = a.map_err(|e| format!("malformed attribute: {e}"))?;
        if a.key.local_name().into_inner() == "nil" && a.value.trim() == "true" {
            nil = true;
        }
    }
    Ok(Element {
        name: e.local_name().into_inner().to_owned(),
        nil,
        ..Element::default()
    })
}

/// Parses a document into its root element.
pub fn parse(text: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    let mut count = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("malformed XML at byte {}: {e}", reader.buffer_position()))?;
        let mut closed = None;
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err("content after the root element".into());
            }
            Event::Start(e) => {
                count += 1;
                if stack.len() >= MAX_DEPTH || count > MAX_ELEMENTS {
                    return Err("the document is too deep or too large".into());
                }
                stack.push(open(&e)?);
            }
            Event::Empty(e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err("the document is too large".into());
                }
                closed = Some(open(&e)?);
            }
            Event::End(_) => {
                closed = Some(stack.pop().ok_or("an end tag without a start")?);
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.into_inner());
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = r.into_inner();
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("unknown entity &{name};"))?
                            .to_owned()
                    }
                    Err(e) => return Err(format!("bad character reference: {e}")),
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&resolved);
                }
            }
            Event::DocType(_) => return Err("a DOCTYPE is not accepted".into()),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
        if let Some(element) = closed {
            match stack.last_mut() {
                Some(parent) => parent.children.push(element),
                None => root = Some(element),
            }
        }
    }
    if !stack.is_empty() {
        return Err("the document ends inside an element".into());
    }
    root.ok_or_else(|| "no root element".into())
}
