//! Maps key paths (`listeners[0].routes[2].cluster`) to the line they stand on, so that
//! semantic errors found after deserialization can still name a line. serde_yaml keeps no
//! spans, so the text is walked once more with yaml-rust2's event parser, which does.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

#[derive(Debug, Default)]
pub struct LineMap {
    /// Key path → (line, column), both 1-based.
    lines: HashMap<String, (usize, usize)>,
}

impl LineMap {
    /// Builds the map; a text yaml-rust2 cannot parse gives an empty map (serde_yaml will
    /// already have reported the syntax error with its own position).
    pub fn build(text: &str) -> LineMap {
        let mut parser = Parser::new_from_str(text);
        let mut map = LineMap::default();
        loop {
            match parser.next_token() {
                Ok((Event::MappingStart(..), m)) => {
                    map.lines.entry(String::new()).or_insert(pos(&m));
                    if map.walk_mapping(&mut parser, "").is_err() {
                        break;
                    }
                }
                Ok((Event::StreamEnd, _)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        map
    }

    /// Line and column of `path`, or of its nearest ancestor that has them.
    pub fn position_of(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    fn walk_node(
        &mut self,
        parser: &mut Parser<std::str::Chars<'_>>,
        path: &str,
        first: (Event, Marker),
    ) -> Result<(), ()> {
        match first.0 {
            Event::MappingStart(..) => self.walk_mapping(parser, path),
            Event::SequenceStart(..) => self.walk_sequence(parser, path),
            _ => Ok(()),
        }
    }

    fn walk_mapping(
        &mut self,
        parser: &mut Parser<std::str::Chars<'_>>,
        path: &str,
    ) -> Result<(), ()> {
        loop {
            let (ev, mark) = parser.next_token().map_err(|_| ())?;
            let key = match ev {
                Event::MappingEnd => return Ok(()),
                Event::Scalar(k, ..) => k,
                Event::StreamEnd => return Err(()),
                other => {
                    // A complex key: skip it and its value.
                    self.walk_node(parser, path, (other, mark))?;
                    let v = parser.next_token().map_err(|_| ())?;
                    self.walk_node(parser, path, v)?;
                    continue;
                }
            };
            let child = if path.is_empty() {
                key
            } else {
                format!("{path}.{key}")
            };
            self.lines.entry(child.clone()).or_insert(pos(&mark));
            let value = parser.next_token().map_err(|_| ())?;
            self.walk_node(parser, &child, value)?;
        }
    }

    fn walk_sequence(
        &mut self,
        parser: &mut Parser<std::str::Chars<'_>>,
        path: &str,
    ) -> Result<(), ()> {
        let mut i = 0;
        loop {
            let (ev, mark) = parser.next_token().map_err(|_| ())?;
            match ev {
                Event::SequenceEnd => return Ok(()),
                Event::StreamEnd => return Err(()),
                ev => {
                    let child = format!("{path}[{i}]");
                    self.lines.entry(child.clone()).or_insert(pos(&mark));
                    self.walk_node(parser, &child, (ev, mark))?;
                    i += 1;
                }
            }
        }
    }
}

fn pos(m: &Marker) -> (usize, usize) {
    (m.line(), m.col() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_lines() {
        let text = "listeners:\n  - name: a\n    routes:\n      - match: { path_prefix: / }\n        cluster: web\nclusters:\n  - name: web\n";
        let m = LineMap::build(text);
        assert_eq!(m.position_of("listeners[0].name").map(|p| p.0), Some(2));
        assert_eq!(
            m.position_of("listeners[0].routes[0].cluster").map(|p| p.0),
            Some(5)
        );
        assert_eq!(
            m.position_of("listeners[0].routes[0].match.path_prefix")
                .map(|p| p.0),
            Some(4)
        );
        assert_eq!(m.position_of("clusters[0].name").map(|p| p.0), Some(7));
        assert_eq!(m.position_of("clusters[0].nothing").map(|p| p.0), Some(7));
    }
}
