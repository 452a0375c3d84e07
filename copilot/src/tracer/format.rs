//! Tracepoint record layouts from tracefs `events/<category>/<name>/format`.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "tracefs is not mounted (looked for {tried:?}); mount it with `mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    NoTracefs { tried: Vec<PathBuf> },
    #[error(
        "tracefs at {path} is not readable by this process (it is root-only, mode 0700): run as \
         uid 0 with CAP_BPF and CAP_PERFMON, or add CAP_DAC_READ_SEARCH"
    )]
    TracefsDenied { path: PathBuf },
    #[error("tracepoint {category}/{name} is not available in this kernel ({path})")]
    NoTracepoint {
        category: String,
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("tracepoint {category}/{name} has no field {field}")]
    NoField {
        category: String,
        name: String,
        field: String,
    },
}

/// A field of a tracepoint record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

/// The fields of one tracepoint's record, by name.
#[derive(Debug, Clone)]
pub struct Format {
    category: String,
    name: String,
    fields: HashMap<String, Field>,
}

/// Where tracefs is mounted: the modern path first, then the debugfs one.
pub fn tracefs() -> Result<PathBuf, Error> {
    let tried = [
        PathBuf::from("/sys/kernel/tracing"),
        PathBuf::from("/sys/kernel/debug/tracing"),
    ];
    for p in &tried {
        match std::fs::metadata(p.join("events")) {
            Ok(m) if m.is_dir() => return Ok(p.clone()),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(Error::TracefsDenied { path: p.clone() });
            }
            _ => {}
        }
    }
    Err(Error::NoTracefs {
        tried: tried.to_vec(),
    })
}

impl Format {
    pub fn read(tracefs: &Path, category: &str, name: &str) -> Result<Self, Error> {
        let path = tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| Error::NoTracepoint {
            category: category.into(),
            name: name.into(),
            path,
            source,
        })?;
        Ok(Self::parse(category, name, &text))
    }

    /// Parses lines such as
    /// `field:__data_loc char[] filename;<TAB>offset:8;<TAB>size:4;<TAB>signed:0;`.
    pub fn parse(category: &str, name: &str, text: &str) -> Self {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in line.trim().split(';') {
                let part = part.trim();
                if let Some(d) = part.strip_prefix("field:") {
                    decl = Some(d);
                } else if let Some(o) = part.strip_prefix("offset:") {
                    offset = o.parse().ok();
                } else if let Some(s) = part.strip_prefix("size:") {
                    size = s.parse().ok();
                }
            }
            if let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) {
                let last = decl.split_whitespace().last().unwrap_or("");
                let field = last.split('[').next().unwrap_or(last);
                fields.insert(field.to_owned(), Field { offset, size });
            }
        }
        Self {
            category: category.into(),
            name: name.into(),
            fields,
        }
    }

    pub fn field(&self, field: &str) -> Result<Field, Error> {
        self.fields
            .get(field)
            .copied()
            .ok_or_else(|| Error::NoField {
                category: self.category.clone(),
                name: self.name.clone(),
                field: field.into(),
            })
    }

    pub fn has(&self, field: &str) -> bool {
        self.fields.contains_key(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXIT_6_18: &str = "name: sched_process_exit\nID: 369\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
        \tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
        \tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\
        \tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;\n\
        \tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n\n\
        print fmt: \"comm=%s pid=%d\", REC->comm, REC->pid\n";

    #[test]
    fn fields_of_sched_process_exit() {
        let f = Format::parse("sched", "sched_process_exit", EXIT_6_18);
        assert_eq!(
            f.field("group_dead").unwrap(),
            Field {
                offset: 32,
                size: 1
            }
        );
        assert_eq!(
            f.field("comm").unwrap(),
            Field {
                offset: 8,
                size: 16
            }
        );
        assert_eq!(f.field("pid").unwrap().offset, 24);
        let err = f.field("nope").unwrap_err().to_string();
        assert!(
            err.contains("sched/sched_process_exit has no field nope"),
            "{err}"
        );
    }

    #[test]
    fn data_loc_fields() {
        let text = "\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n";
        let f = Format::parse("sched", "sched_process_exec", text);
        assert_eq!(f.field("filename").unwrap(), Field { offset: 8, size: 4 });
    }
}
