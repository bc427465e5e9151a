//! Where each key of a YAML file is: `heads[1].weights` to line and column.
//!
//! serde gives typed values but no positions, so the file is also read with
//! `yaml-rust2`'s event parser, which reports a marker for every node. Paths use
//! the same spelling as `serde_path_to_error`: `.key` for mapping keys and `[i]`
//! for sequence items.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

/// Positions of the keys and items of one YAML document.
#[derive(Debug, Clone, Default)]
pub struct Positions {
    by_path: HashMap<String, Position>,
    /// Where each scalar value starts (a key's value, or a list item).
    values: HashMap<String, Position>,
}

/// Deepest nesting of mappings and sequences indexed. Pipeline files need a few
/// levels, and serde_yaml refuses values nested deeper than 128 anyway.
pub const MAX_DEPTH: usize = 128;

impl Positions {
    /// Indexes the first document of `text`; a syntax error, or nesting deeper than
    /// [`MAX_DEPTH`], comes back with its position and message.
    pub fn index(text: &str) -> Result<Self, (Position, String)> {
        let mut recorder = Recorder::default();
        let mut parser = Parser::new_from_str(text);
        // The events are pulled one by one here rather than by `Parser::load`, which
        // recurses once per nesting level: a line of `- - - …` tens of thousands of
        // items long overflowed the stack. Each level also holds its path (memory
        // quadratic in the depth), so the depth is capped too.
        loop {
            let (event, mark) = parser
                .next_token()
                .map_err(|e| (position(e.marker()), e.info().to_string()))?;
            let nests = matches!(event, Event::MappingStart(..) | Event::SequenceStart(..));
            if nests && recorder.stack.len() >= MAX_DEPTH {
                return Err((
                    position(&mark),
                    format!("nested more than {MAX_DEPTH} levels deep"),
                ));
            }
            let last = matches!(event, Event::DocumentEnd | Event::StreamEnd);
            recorder.on_event(event, mark);
            if last {
                break;
            }
        }
        Ok(Self {
            by_path: recorder.positions,
            values: recorder.values,
        })
    }

    /// The position of the scalar value at `path`, else that of [`locate`](Self::locate).
    pub fn locate_value(&self, path: &str) -> Position {
        self.values
            .get(path)
            .copied()
            .unwrap_or_else(|| self.locate(path))
    }

    /// The position of `path`, or of its closest recorded ancestor, or line 1.
    pub fn locate(&self, path: &str) -> Position {
        let mut p = path;
        loop {
            if let Some(pos) = self.by_path.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => {
                    return Position { line: 1, column: 1 };
                }
            }
        }
    }
}

fn position(m: &Marker) -> Position {
    Position {
        line: m.line().max(1),
        column: m.col() + 1,
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct Recorder {
    stack: Vec<Frame>,
    positions: HashMap<String, Position>,
    values: HashMap<String, Position>,
}

impl Recorder {
    /// The path of the node about to be read, recording where it starts. Returns
    /// `None` when the node is a mapping key.
    fn enter(&mut self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map { path, key: Some(k) }) => Some(join(path, k)),
            Some(Frame::Seq { path, index }) => Some(format!("{path}[{index}]")),
        }
    }

    /// Marks the current value of the innermost collection as read.
    fn leave_value(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index, .. }) => *index += 1,
            None => {}
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => match self.enter() {
                None => {
                    if let Some(Frame::Map { path, key }) = self.stack.last_mut() {
                        let pos = position(&mark);
                        // A mapping is located at its first key.
                        self.positions.entry(path.clone()).or_insert(pos);
                        self.positions.entry(join(path, &value)).or_insert(pos);
                        *key = Some(value);
                    }
                }
                Some(p) => {
                    self.values.entry(p.clone()).or_insert(position(&mark));
                    self.positions.entry(p).or_insert(position(&mark));
                    self.leave_value();
                }
            },
            Event::Alias(_) if self.enter().is_some() => self.leave_value(),
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A collection used as a mapping key has no path of its own.
                let path = self.enter().unwrap_or_default();
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map { path, key: None }
                } else {
                    Frame::Seq { path, index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.leave_value();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_items_have_their_positions() {
        let text = "name: x\nbackbones:\n  main:\n    weights: a.pt\nheads:\n  - name: d\n    type: ssd\n  - name: s\n    options: {top_k: 3}\n";
        let p = Positions::index(text).unwrap();
        assert_eq!(p.locate("name"), Position { line: 1, column: 1 });
        assert_eq!(
            p.locate("backbones.main.weights"),
            Position { line: 4, column: 5 }
        );
        assert_eq!(p.locate("heads[1]"), Position { line: 8, column: 5 });
        assert_eq!(p.locate("heads[1].name"), Position { line: 8, column: 5 });
        assert_eq!(p.locate("heads[0].type"), Position { line: 7, column: 5 });
        assert_eq!(
            p.locate("heads[1].options.top_k"),
            Position {
                line: 9,
                column: 15
            }
        );
        assert_eq!(
            p.locate_value("heads[1].options.top_k"),
            Position {
                line: 9,
                column: 22
            }
        );
        assert_eq!(
            p.locate_value("backbones.main.weights"),
            Position {
                line: 4,
                column: 14
            }
        );
        // Unknown paths fall back to the closest ancestor.
        assert_eq!(
            p.locate("heads[0].nothing"),
            Position { line: 6, column: 5 }
        );
    }

    /// Found by review while adding the fuzz targets, and confirmed as a crash with
    /// the `pipeline_yaml` target: `Parser::load` recursed once per level, and
    /// 20 000 levels overflowed the stack.
    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let deep = |levels: usize| format!("{}x\n", "- ".repeat(levels));
        let p = Positions::index(&deep(MAX_DEPTH)).unwrap();
        assert_eq!(
            p.locate_value(&"[0]".repeat(MAX_DEPTH)),
            Position {
                line: 1,
                column: 2 * MAX_DEPTH + 1
            }
        );
        for levels in [MAX_DEPTH + 1, 100_000] {
            let (pos, msg) = Positions::index(&deep(levels)).unwrap_err();
            assert_eq!(msg, "nested more than 128 levels deep");
            assert_eq!(
                pos,
                Position {
                    line: 1,
                    column: 2 * MAX_DEPTH + 1
                }
            );
        }
    }

    #[test]
    fn only_the_first_document_is_indexed() {
        let p = Positions::index("a: 1\n---\nb: [\n").unwrap();
        assert_eq!(p.locate("a"), Position { line: 1, column: 1 });
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let (pos, msg) = Positions::index("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(pos.line >= 1, "{pos:?}");
        assert!(!msg.is_empty());
    }
}
