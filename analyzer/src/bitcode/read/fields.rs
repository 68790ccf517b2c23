//! Which struct field an address points into, from a `getelementptr`'s source type and indices.
//!
//! A field is named by the innermost struct that contains the addressed scalar and the field's
//! index (`struct.ngx_event_s:3`); selecting a nested struct addresses its first member, so that
//! `&a->b` and `&a->b.first` name the same field for loads and stores. Such an address is still
//! a pointer to an object (`GepKey::Object`): handing it to a function is not handing out the
//! address of its first field. Unoptimised IR (what `cargo xtask bitcode`
//! produces) addresses every member through a typed `getelementptr`, field 0 included; optimised
//! IR rewrites many of them to byte offsets (`getelementptr i8`), which name nothing. `.N`
//! suffixes that the IR linker adds to same-named types from different files are dropped, which
//! may merge two distinct types but never splits one; the IR linker itself merges struct types of
//! one layout, which loads and stores undo through their TBAA tags (`Symbols::member_field`).
//!
//! The walk is written once over [`TypeView`]: llvm-ir types for instructions, llvm-sys types for
//! what llvm-ir does not expose (constant expressions, initializers).

/// One level of a type, enough to follow `getelementptr` indices.
pub enum Shape<T> {
    Struct {
        name: Option<String>,
        fields: Vec<T>,
    },
    /// An array or vector of the element type.
    Sequence(T),
    Scalar,
}

pub trait TypeView: Sized {
    fn shape(&self) -> Shape<Self>;
}

/// Where a `getelementptr` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GepKey {
    /// Into this named field.
    Field(String),
    /// At a struct (a member struct, or whole structs by pointer arithmetic), whose first scalar
    /// is this named field.
    Object(String),
    /// Only through arrays or plain pointer arithmetic: the base pointer decides.
    NoStruct,
    /// Into a literal (unnamed) struct, or not understood.
    Untyped,
}

/// The field addressed by `getelementptr source, base, indices…` (constant indices as `Some`).
pub fn gep_key<T: TypeView>(source: T, indices: &[Option<u64>]) -> GepKey {
    let mut ty = source;
    let mut key: Option<(Option<String>, u64)> = None;
    // The first index steps over whole objects of the source type.
    for index in indices.iter().skip(1) {
        ty = match ty.shape() {
            Shape::Struct { name, fields } => {
                let Some(field) = index.and_then(|index| fields.into_iter().nth(index as usize).map(|f| (index, f)))
                else {
                    return GepKey::Untyped;
                };
                key = Some((name, field.0));
                field.1
            }
            Shape::Sequence(element) => element,
            Shape::Scalar => return GepKey::Untyped,
        };
    }
    // A load or store through the result touches the first scalar inside what was selected.
    let object = matches!(ty.shape(), Shape::Struct { .. });
    loop {
        ty = match ty.shape() {
            Shape::Struct { name, fields } => match fields.into_iter().next() {
                Some(first) => {
                    key = Some((name, 0));
                    first
                }
                None => break,
            },
            Shape::Sequence(element) => element,
            Shape::Scalar => break,
        };
    }
    match key {
        None => GepKey::NoStruct,
        Some((Some(name), index)) if object => GepKey::Object(field_name(&name, index)),
        Some((Some(name), index)) => GepKey::Field(field_name(&name, index)),
        Some((None, _)) => GepKey::Untyped,
    }
}

/// `struct.ngx_event_s.42`, field 3 → `struct.ngx_event_s:3`.
pub fn field_name(struct_name: &str, index: u64) -> String {
    format!("{}:{index}", unsuffixed(struct_name))
}

fn unsuffixed(mut name: &str) -> &str {
    while let Some((stem, suffix)) = name.rsplit_once('.') {
        if suffix.is_empty() || !suffix.bytes().all(|byte| byte.is_ascii_digit()) {
            break;
        }
        name = stem;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built type: enough to exercise the walk without LLVM.
    #[derive(Clone)]
    enum T {
        Named(&'static str, Vec<T>),
        Literal(Vec<T>),
        Array(Box<T>),
        Ptr,
    }

    impl TypeView for T {
        fn shape(&self) -> Shape<T> {
            match self {
                T::Named(name, fields) => Shape::Struct { name: Some((*name).into()), fields: fields.clone() },
                T::Literal(fields) => Shape::Struct { name: None, fields: fields.clone() },
                T::Array(element) => Shape::Sequence((**element).clone()),
                T::Ptr => Shape::Scalar,
            }
        }
    }

    fn event() -> T {
        T::Named("struct.ev.7", vec![T::Ptr, T::Ptr, T::Array(Box::new(T::Ptr))])
    }

    #[test]
    fn names_the_innermost_field() {
        let outer = T::Named("struct.outer", vec![T::Ptr, event()]);
        assert_eq!(gep_key(event(), &[Some(0), Some(1)]), GepKey::Field("struct.ev:1".into()));
        assert_eq!(gep_key(outer.clone(), &[Some(0), Some(1), Some(2), None]), GepKey::Field("struct.ev:2".into()));
        // Selecting the nested struct itself addresses its first member, through an object pointer.
        assert_eq!(gep_key(outer, &[Some(0), Some(1)]), GepKey::Object("struct.ev:0".into()));
        assert_eq!(gep_key(event(), &[Some(0), Some(0)]), GepKey::Field("struct.ev:0".into()));
        // Pointer arithmetic over whole structs lands on their first member.
        assert_eq!(gep_key(event(), &[Some(3)]), GepKey::Object("struct.ev:0".into()));
    }

    #[test]
    fn literal_structs_and_variable_field_indices_are_untyped() {
        assert_eq!(gep_key(T::Literal(vec![T::Ptr, T::Ptr]), &[Some(0), Some(1)]), GepKey::Untyped);
        assert_eq!(gep_key(event(), &[Some(0), None]), GepKey::Untyped);
        assert_eq!(gep_key(event(), &[Some(0), Some(9)]), GepKey::Untyped);
    }

    #[test]
    fn arrays_and_pointer_arithmetic_defer_to_the_base() {
        assert_eq!(gep_key(T::Ptr, &[None]), GepKey::NoStruct);
        assert_eq!(gep_key(T::Array(Box::new(T::Ptr)), &[Some(0), None]), GepKey::NoStruct);
    }

    #[test]
    fn link_suffixes_are_dropped() {
        assert_eq!(field_name("struct.ngx_event_s.42.1", 3), "struct.ngx_event_s:3");
        assert_eq!(field_name("struct.v2.x", 1), "struct.v2.x:1");
    }
}
