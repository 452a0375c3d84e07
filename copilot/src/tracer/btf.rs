//! Just enough of a BTF reader to find struct member offsets and tracepoint
//! prototypes in the running kernel's `/sys/kernel/btf/vmlinux`. Rust eBPF has
//! no CO-RE, so the offsets of the `task_struct`, `signal_struct` and
//! `linux_binprm` fields the programs read are looked up here and passed to them
//! as load-time globals; the arguments a raw tracepoint passes are read from its
//! `btf_trace_<name>` typedef (every kernel with BTF since 5.5 has them).
//!
//! Format: `include/uapi/linux/btf.h` and the kernel's `Documentation/bpf/btf.rst`.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("BTF data is truncated or malformed ({what})")]
    Malformed { what: &'static str },
    #[error("BTF has no struct {name}")]
    NoStruct { name: String },
    #[error("BTF struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
    #[error("BTF member {strukt}.{member} is a bitfield")]
    Bitfield { strukt: String, member: String },
    #[error("BTF has no prototype for tracepoint {name} (no typedef btf_trace_{name})")]
    NoTracepoint { name: String },
}

/// The type of one argument a tracepoint passes, as far as the programs care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// A pointer to the named struct (empty for other pointees).
    Pointer(String),
    /// An integer type, by its name after typedefs (`int`, `_Bool`, …).
    Int(String),
    Other,
}

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_TYPE_TAG: u32 = 18;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    ty: u32,
    /// Bit offset (bitfield size stripped when the struct's kind_flag is set).
    bit_offset: u32,
    bitfield: bool,
}

#[derive(Debug, Clone)]
struct Type {
    name: u32,
    kind: u32,
    /// `size` for structs, `type` for modifiers and typedefs.
    size_or_type: u32,
    /// Struct and union members; a function prototype's parameters (offset 0).
    members: Vec<Member>,
}

/// Parsed BTF: the types (id 0 is void) and the string section.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs: HashMap<String, u32>,
    typedefs: HashMap<String, u32>,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u32(&mut self) -> Result<u32, Error> {
        let b = self
            .data
            .get(self.pos..self.pos + 4)
            .ok_or(Error::Malformed {
                what: "type section",
            })?;
        self.pos += 4;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn skip(&mut self, n: usize) -> Result<(), Error> {
        if self.pos + n > self.data.len() {
            return Err(Error::Malformed {
                what: "type section",
            });
        }
        self.pos += n;
        Ok(())
    }

    /// Every type record of the type section, after the implicit void (id 0).
    fn types(&mut self) -> Result<Vec<Type>, Error> {
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            size_or_type: 0,
            members: vec![],
        }];
        while self.pos < self.data.len() {
            types.push(self.type_record()?);
        }
        Ok(types)
    }

    /// One `struct btf_type` and the kind-specific data after it; only struct,
    /// union and function prototype members are kept, the rest is skipped.
    fn type_record(&mut self) -> Result<Type, Error> {
        let name = self.u32()?;
        let info = self.u32()?;
        let size_or_type = self.u32()?;
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        let kind_flag = info >> 31 == 1;
        let mut members = Vec::new();
        match kind {
            // INT, VAR, DECL_TAG: one u32 of extra data.
            1 | 14 | 17 => self.skip(4)?,
            // ARRAY: struct btf_array.
            3 => self.skip(12)?,
            KIND_STRUCT | KIND_UNION => members = self.members(vlen, kind_flag)?,
            KIND_FUNC_PROTO => members = self.params(vlen)?,
            // ENUM: 8 bytes per entry.
            6 => self.skip(8 * vlen)?,
            // DATASEC, ENUM64: 12 bytes per entry.
            15 | 19 => self.skip(12 * vlen)?,
            // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG.
            2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => {}
            _ => {
                return Err(Error::Malformed {
                    what: "unknown type kind",
                });
            }
        }
        Ok(Type {
            name,
            kind,
            size_or_type,
            members,
        })
    }

    /// `vlen` entries of `struct btf_member`; with `kind_flag` set, the offset's
    /// top byte is the bitfield size.
    fn members(&mut self, vlen: usize, kind_flag: bool) -> Result<Vec<Member>, Error> {
        let mut members = Vec::new();
        for _ in 0..vlen {
            let name = self.u32()?;
            let ty = self.u32()?;
            let off = self.u32()?;
            let (bit_offset, bitfield) = if kind_flag {
                (off & 0x00ff_ffff, off >> 24 != 0)
            } else {
                (off, false)
            };
            members.push(Member {
                name,
                ty,
                bit_offset,
                bitfield,
            });
        }
        Ok(members)
    }

    /// `vlen` entries of `struct btf_param`, as members at offset 0.
    fn params(&mut self, vlen: usize) -> Result<Vec<Member>, Error> {
        let mut params = Vec::new();
        for _ in 0..vlen {
            let name = self.u32()?;
            let ty = self.u32()?;
            params.push(Member {
                name,
                ty,
                bit_offset: 0,
                bitfield: false,
            });
        }
        Ok(params)
    }
}

impl Btf {
    /// Parses little-endian BTF (the only kind this x86-64/arm64 tool meets).
    pub fn parse(data: &[u8]) -> Result<Self, Error> {
        let hdr = |off: usize| -> Result<u32, Error> {
            let b = data
                .get(off..off + 4)
                .ok_or(Error::Malformed { what: "header" })?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            return Err(Error::Malformed { what: "magic" });
        }
        let hdr_len = hdr(4)? as usize;
        let (type_off, type_len) = (hdr(8)? as usize, hdr(12)? as usize);
        let (str_off, str_len) = (hdr(16)? as usize, hdr(20)? as usize);
        let section = |off: usize, len: usize, what| {
            data.get(hdr_len + off..hdr_len + off + len)
                .ok_or(Error::Malformed { what })
        };
        let type_data = section(type_off, type_len, "type section bounds")?;
        let strings = section(str_off, str_len, "string section bounds")?.to_vec();

        let types = Reader {
            data: type_data,
            pos: 0,
        }
        .types()?;
        let mut btf = Self {
            types,
            strings,
            structs: HashMap::new(),
            typedefs: HashMap::new(),
        };
        btf.index();
        Ok(btf)
    }

    /// Indexes named structs with members (the first of a name wins) and the
    /// `btf_trace_*` typedefs by name.
    fn index(&mut self) {
        for (id, t) in self.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name != 0 && !t.members.is_empty() {
                let name = self.string(t.name).to_owned();
                self.structs.entry(name).or_insert(id as u32);
            } else if t.kind == KIND_TYPEDEF && self.string(t.name).starts_with("btf_trace_") {
                let name = self.string(t.name).to_owned();
                self.typedefs.entry(name).or_insert(id as u32);
            }
        }
    }

    fn string(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type;
                }
                _ => break,
            }
        }
        id
    }

    /// `sizeof(struct strukt)`.
    pub fn struct_size(&self, strukt: &str) -> Result<u32, Error> {
        let id = *self.structs.get(strukt).ok_or_else(|| Error::NoStruct {
            name: strukt.into(),
        })?;
        self.types
            .get(id as usize)
            .map(|t| t.size_or_type)
            .ok_or(Error::Malformed { what: "type id" })
    }

    /// Byte offset of `member` in `struct strukt`, looking through anonymous
    /// structs and unions (as C does for `task_struct`'s unnamed members).
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, Error> {
        let id = *self.structs.get(strukt).ok_or_else(|| Error::NoStruct {
            name: strukt.into(),
        })?;
        let no_member = || Error::NoMember {
            strukt: strukt.into(),
            member: member.into(),
        };
        let bits = self.find(id, member, 0).ok_or_else(no_member)?;
        match bits {
            Found::Bits(b) if b % 8 == 0 => Ok(b / 8),
            _ => Err(Error::Bitfield {
                strukt: strukt.into(),
                member: member.into(),
            }),
        }
    }

    /// The arguments raw tracepoint `name` passes its programs, in order: its
    /// `TP_PROTO`, from `typedef void (*btf_trace_<name>)(void *, …)` without the
    /// leading `void *` (the probe's data pointer, not passed to programs).
    pub fn tracepoint_args(&self, name: &str) -> Result<Vec<Arg>, Error> {
        let missing = || Error::NoTracepoint { name: name.into() };
        let id = *self
            .typedefs
            .get(&format!("btf_trace_{name}"))
            .ok_or_else(missing)?;
        let ptr = self
            .types
            .get(self.resolve(id) as usize)
            .ok_or_else(missing)?;
        let proto = self
            .types
            .get(self.resolve(ptr.size_or_type) as usize)
            .filter(|t| ptr.kind == KIND_PTR && t.kind == KIND_FUNC_PROTO)
            .ok_or_else(missing)?;
        Ok(proto
            .members
            .iter()
            .skip(1)
            .map(|p| self.arg(p.ty))
            .collect())
    }

    fn arg(&self, ty: u32) -> Arg {
        let Some(t) = self.types.get(self.resolve(ty) as usize) else {
            return Arg::Other;
        };
        match t.kind {
            KIND_INT => Arg::Int(self.string(t.name).to_owned()),
            KIND_PTR => {
                let pointee = self.types.get(self.resolve(t.size_or_type) as usize);
                let name = pointee
                    .filter(|p| p.kind == KIND_STRUCT)
                    .map_or("", |p| self.string(p.name));
                Arg::Pointer(name.to_owned())
            }
            _ => Arg::Other,
        }
    }

    fn find(&self, id: u32, member: &str, depth: u32) -> Option<Found> {
        let t = self.types.get(id as usize)?;
        if depth > 8 || !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for m in &t.members {
            if m.name != 0 && self.string(m.name) == member {
                return Some(if m.bitfield {
                    Found::Bitfield
                } else {
                    Found::Bits(m.bit_offset)
                });
            }
        }
        for m in t.members.iter().filter(|m| m.name == 0) {
            match self.find(self.resolve(m.ty), member, depth + 1) {
                Some(Found::Bits(b)) => return Some(Found::Bits(m.bit_offset + b)),
                Some(Found::Bitfield) => return Some(Found::Bitfield),
                None => {}
            }
        }
        None
    }
}

enum Found {
    Bits(u32),
    Bitfield,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds BTF bytes: `struct inner { int a; int b; }`,
    /// `struct outer { long x; union { int y; struct inner in; }; int z:3; }`.
    pub(crate) fn sample() -> Vec<u8> {
        let mut strings = b"\0int\0inner\0a\0b\0outer\0x\0y\0in\0z\0".to_vec();
        let s = |name: &str, strings: &mut Vec<u8>| -> u32 {
            let needle = format!("\0{name}\0");
            let pos = strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes());
            match pos {
                Some(p) => p as u32 + 1,
                None => {
                    let p = strings.len() as u32;
                    strings.extend_from_slice(name.as_bytes());
                    strings.push(0);
                    p
                }
            }
        };
        let mut t: Vec<u32> = Vec::new();
        let info =
            |kind: u32, vlen: u32, kflag: bool| (kind << 24) | vlen | (u32::from(kflag) << 31);
        // 1: int
        t.extend([s("int", &mut strings), info(1, 0, false), 4, 32]);
        // 2: struct inner { int a; int b; }
        t.extend([s("inner", &mut strings), info(KIND_STRUCT, 2, false), 8]);
        t.extend([s("a", &mut strings), 1, 0, s("b", &mut strings), 1, 32]);
        // 3: anonymous union { int y; struct inner in; }
        t.extend([0, info(KIND_UNION, 2, false), 8]);
        t.extend([s("y", &mut strings), 1, 0, s("in", &mut strings), 2, 0]);
        // 4: struct outer (kind_flag: bitfield sizes in the offset's top byte)
        t.extend([s("outer", &mut strings), info(KIND_STRUCT, 3, true), 24]);
        t.extend([
            s("x", &mut strings),
            1,
            0,
            0,
            3,
            64,
            s("z", &mut strings),
            1,
            (3 << 24) | 128,
        ]);
        // 5: void *; 6: struct outer *; 7: void (void *, struct outer *, int);
        // 8: a pointer to 7; 9: typedef 8 btf_trace_demo.
        t.extend([0, info(KIND_PTR, 0, false), 0]);
        t.extend([0, info(KIND_PTR, 0, false), 4]);
        t.extend([0, info(KIND_FUNC_PROTO, 3, false), 0, 0, 5, 0, 6, 0, 1]);
        t.extend([0, info(KIND_PTR, 0, false), 7]);
        t.extend([
            s("btf_trace_demo", &mut strings),
            info(KIND_TYPEDEF, 0, false),
            8,
        ]);
        let type_bytes: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = Vec::new();
        out.extend(MAGIC.to_le_bytes());
        out.extend([1u8, 0]);
        for v in [
            24u32,
            0,
            type_bytes.len() as u32,
            type_bytes.len() as u32,
            strings.len() as u32,
        ] {
            out.extend(v.to_le_bytes());
        }
        out.extend(type_bytes);
        out.extend(strings);
        out
    }

    #[test]
    fn offsets_through_anonymous_members() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("inner", "b"), Ok(4));
        assert_eq!(btf.member_offset("outer", "x"), Ok(0));
        assert_eq!(btf.member_offset("outer", "y"), Ok(8));
        assert_eq!(btf.member_offset("outer", "in"), Ok(8));
        assert_eq!(
            btf.member_offset("outer", "z"),
            Err(Error::Bitfield {
                strukt: "outer".into(),
                member: "z".into()
            })
        );
        assert!(matches!(
            btf.member_offset("outer", "nope"),
            Err(Error::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("task_struct", "tgid"),
            Err(Error::NoStruct { .. })
        ));
    }

    #[test]
    fn tracepoint_arguments_from_the_typedef() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(
            btf.tracepoint_args("demo"),
            Ok(vec![Arg::Pointer("outer".into()), Arg::Int("int".into())])
        );
        assert_eq!(
            btf.tracepoint_args("other"),
            Err(Error::NoTracepoint {
                name: "other".into()
            })
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0u8; 64]).is_err());
        let mut cut = sample();
        cut.truncate(40);
        assert!(Btf::parse(&cut).is_err());
    }

    #[test]
    fn running_kernel() {
        // The kernel's own BTF, where present (every CI machine of this kind has it).
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI machine without /sys/kernel/btf/vmlinux"
            );
            return;
        };
        let btf = Btf::parse(&data).unwrap();
        let tgid = btf.member_offset("task_struct", "tgid").unwrap();
        let pid = btf.member_offset("task_struct", "pid").unwrap();
        assert_eq!(tgid, pid + 4, "pid and tgid are adjacent pid_t fields");
        btf.member_offset("signal_struct", "group_exit_code")
            .unwrap();
        btf.member_offset("linux_binprm", "filename").unwrap();
        let exec = btf.tracepoint_args("sched_process_exec").unwrap();
        assert_eq!(
            exec,
            [
                Arg::Pointer("task_struct".into()),
                Arg::Int("int".into()),
                Arg::Pointer("linux_binprm".into())
            ]
        );
        let exit = btf.tracepoint_args("sched_process_exit").unwrap();
        assert_eq!(exit[0], Arg::Pointer("task_struct".into()));
        assert!(matches!(
            btf.tracepoint_args("no_such_tracepoint"),
            Err(Error::NoTracepoint { .. })
        ));
    }
}
