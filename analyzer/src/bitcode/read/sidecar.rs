//! What llvm-ir does not expose, read through LLVM's C API (llvm-sys, the binding llvm-ir uses).
//!
//! llvm-ir 0.11 drops three things this analysis needs: the text and constraints of inline
//! assembly (its `InlineAssembly` has only a type), the struct types of constants (its
//! `Constant::Struct` has no name, so an initializer cannot say which field a function pointer
//! sits in), and the source element type of constant `getelementptr` expressions. LLVM ≥ 18
//! has C getters for all of them (`LLVMGetInlineAsmAsmString`, `LLVMGetInlineAsmConstraintString`,
//! `LLVMGetGEPSourceElementType`), so one pass over the module here collects exactly those facts,
//! keyed by names that llvm-ir also has. Parsing here first also yields LLVM's own error message
//! for a broken file, which llvm-ir's parser discards.
//!
//! LLVM's type-based alias analysis tags (`!tbaa`) are read here too: llvm-ir drops all
//! instruction metadata, and they keep the C struct a member access was written against after
//! the IR linker has merged every struct type of the same layout into one (see [`access_tag`]).
//!
//! The alternative, running `llvm-dis` and parsing its text, would need LLVM's tools at run time
//! and a parser for the textual IR; the C API is already linked.

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_void};

use llvm_sys::LLVMOpcode;
use llvm_sys::LLVMTypeKind;
use llvm_sys::bit_reader::LLVMParseBitcodeInContext2;
use llvm_sys::core::*;
use llvm_sys::prelude::{LLVMDiagnosticInfoRef, LLVMModuleRef, LLVMTypeRef, LLVMValueRef};

use super::fields::{GepKey, Shape, TypeView, field_name, gep_key};
use crate::bitcode::program::Number;

/// One inline-asm call, in instruction order within its function.
#[derive(Debug, Clone)]
pub struct RawAsm {
    pub text: String,
    pub constraints: String,
    /// What each call argument is, for the syscall-number operand.
    pub args: Vec<Number>,
}

/// Function pointers and global addresses in one initializer.
#[derive(Debug, Default)]
pub struct RawInitializer {
    pub functions: Vec<(Option<String>, String)>,
    pub globals: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Sidecar {
    pub asm: HashMap<String, Vec<RawAsm>>,
    pub initializers: HashMap<String, RawInitializer>,
    pub constructors: Vec<String>,
    pub destructors: Vec<String>,
    /// Constant `getelementptr`s in code: (global, constant indices) → field.
    pub constant_geps: HashMap<(String, Vec<Option<u64>>), GepKey>,
    /// The field a load or store straight through a global's address touches: the first member
    /// of a struct global, or the global itself (`@name`) for pointers and arrays of them.
    pub global_fields: HashMap<String, String>,
    pub module_asm: String,
    /// Per function, per load and store in instruction order: the C member a pointer-typed
    /// access touches by its TBAA tag (`ngx_pool_s+40`, the innermost struct and the offset in
    /// it), `None` when it has no such tag or is not pointer-typed.
    pub access_tags: HashMap<String, Vec<Option<String>>>,
}

/// Reads TBAA type nodes, naming anonymous structs by node (identical definitions share one).
struct Tbaa {
    kind: u32,
    anonymous: HashMap<LLVMValueRef, usize>,
}

/// Parses `bytes` with LLVM and collects the side facts, or returns LLVM's error message.
pub fn scan(bytes: &[u8]) -> Result<Sidecar, String> {
    let mut diagnostics = String::new();
    // SAFETY: the context, buffer and module are created here, used only on this thread, and
    // disposed in reverse order before returning; `bytes` outlives the buffer that borrows it,
    // and `diagnostics` outlives the context whose handler writes to it.
    unsafe {
        let context = LLVMContextCreate();
        // Without a handler LLVM prints the error and exits the process.
        LLVMContextSetDiagnosticHandler(context, Some(collect_diagnostic), (&raw mut diagnostics).cast());
        let buffer = LLVMCreateMemoryBufferWithMemoryRange(bytes.as_ptr().cast(), bytes.len(), c"bitcode".as_ptr(), 0);
        let mut module: LLVMModuleRef = std::ptr::null_mut();
        let failed = LLVMParseBitcodeInContext2(context, buffer, &mut module) != 0;
        LLVMDisposeMemoryBuffer(buffer);
        let result = if failed {
            Err(if diagnostics.is_empty() { "LLVM could not parse it".to_owned() } else { diagnostics })
        } else {
            let sidecar = scan_module(module);
            LLVMDisposeModule(module);
            Ok(sidecar)
        };
        LLVMContextDispose(context);
        result
    }
}

extern "C" fn collect_diagnostic(info: LLVMDiagnosticInfoRef, context: *mut c_void) {
    // SAFETY: `context` is the `String` registered in `scan`, alive for the whole parse; the
    // description is a message LLVM allocates for the caller to dispose.
    unsafe {
        let diagnostics = &mut *context.cast::<String>();
        let description = LLVMGetDiagInfoDescription(info);
        if !description.is_null() {
            if !diagnostics.is_empty() {
                diagnostics.push_str("; ");
            }
            diagnostics.push_str(&CStr::from_ptr(description).to_string_lossy());
            LLVMDisposeMessage(description);
        }
    }
}

unsafe fn scan_module(module: LLVMModuleRef) -> Sidecar {
    let mut sidecar = Sidecar::default();
    // SAFETY: `module` is a valid parsed module; every iterator below walks its own lists.
    unsafe {
        let mut len = 0;
        let asm = LLVMGetModuleInlineAsm(module, &mut len);
        sidecar.module_asm = text(asm, len);
        let mut tbaa = Tbaa {
            kind: LLVMGetMDKindIDInContext(LLVMGetModuleContext(module), c"tbaa".as_ptr(), 4),
            anonymous: HashMap::new(),
        };
        let mut function = LLVMGetFirstFunction(module);
        while !function.is_null() {
            scan_function(function, &mut sidecar, &mut tbaa);
            function = LLVMGetNextFunction(function);
        }
        let mut global = LLVMGetFirstGlobal(module);
        while !global.is_null() {
            scan_global(global, &mut sidecar);
            global = LLVMGetNextGlobal(global);
        }
        let mut ifunc = LLVMGetFirstGlobalIFunc(module);
        while !ifunc.is_null() {
            let resolver = LLVMGetGlobalIFuncResolver(ifunc);
            if !resolver.is_null() && !LLVMIsAFunction(resolver).is_null() {
                sidecar.constructors.push(value_name(resolver));
            }
            ifunc = LLVMGetNextGlobalIFunc(ifunc);
        }
    }
    sidecar
}

unsafe fn scan_function(function: LLVMValueRef, sidecar: &mut Sidecar, tbaa: &mut Tbaa) {
    let mut asm_calls = Vec::new();
    let mut tags = Vec::new();
    // SAFETY: walks the blocks and instructions of a valid function.
    unsafe {
        let mut block = LLVMGetFirstBasicBlock(function);
        while !block.is_null() {
            let mut instruction = LLVMGetFirstInstruction(block);
            while !instruction.is_null() {
                if let Some(asm) = inline_asm(function, instruction) {
                    asm_calls.push(asm);
                }
                if !LLVMIsALoadInst(instruction).is_null() || !LLVMIsAStoreInst(instruction).is_null() {
                    tags.push(access_tag(instruction, tbaa));
                }
                for index in 0..LLVMGetNumOperands(instruction).max(0) as u32 {
                    record_constant_gep(LLVMGetOperand(instruction, index), sidecar);
                }
                instruction = LLVMGetNextInstruction(instruction);
            }
            block = LLVMGetNextBasicBlock(block);
        }
        if !asm_calls.is_empty() {
            sidecar.asm.insert(value_name(function), asm_calls);
        }
        if tags.iter().any(Option::is_some) {
            sidecar.access_tags.insert(value_name(function), tags);
        }
    }
}

unsafe fn inline_asm(function: LLVMValueRef, instruction: LLVMValueRef) -> Option<RawAsm> {
    // SAFETY: `instruction` is valid; the called value of a call instruction is never null.
    unsafe {
        if LLVMIsACallInst(instruction).is_null() {
            return None;
        }
        let called = LLVMGetCalledValue(instruction);
        if LLVMIsAInlineAsm(called).is_null() {
            return None;
        }
        let (mut text_len, mut constraints_len) = (0, 0);
        let asm_text = LLVMGetInlineAsmAsmString(called, &mut text_len);
        let constraints = LLVMGetInlineAsmConstraintString(called, &mut constraints_len);
        let args = (0..LLVMGetNumArgOperands(instruction))
            .map(|index| number(function, LLVMGetOperand(instruction, index)))
            .collect();
        Some(RawAsm { text: text(asm_text, text_len), constraints: text(constraints, constraints_len), args })
    }
}

/// What an asm operand is: a constant, one of the function's parameters, or something else.
unsafe fn number(function: LLVMValueRef, mut value: LLVMValueRef) -> Number {
    // SAFETY: `value` and `function` are valid values of the same module.
    unsafe {
        while !LLVMIsACastInst(value).is_null() {
            value = LLVMGetOperand(value, 0);
        }
        if !LLVMIsAConstantInt(value).is_null() {
            return Number::Const(LLVMConstIntGetZExtValue(value));
        }
        if !LLVMIsAArgument(value).is_null()
            && let Some(index) = (0..LLVMCountParams(function)).find(|&index| LLVMGetParam(function, index) == value)
        {
            return Number::Param(index);
        }
        Number::Unknown
    }
}

/// The C member a pointer-typed load or store touches, by its TBAA access tag `!{base, access,
/// offset}`: struct type nodes are `!{name, member, offset, member, offset, …}`, so the member
/// at the offset is followed down to the access type, and the last struct on the way is the
/// innermost one holding the pointer — the same one the IR's `getelementptr`s name, so `p->d.last`
/// and `d->last` get one name. A char access (unions, `may_alias`, character types) may touch any
/// member and gets none; so does an access whose path is ambiguous or does not reach its type.
unsafe fn access_tag(instruction: LLVMValueRef, tbaa: &mut Tbaa) -> Option<String> {
    // SAFETY: `instruction` is a valid load or store; metadata operands are read only after
    // checking their kind.
    unsafe {
        let accessed = if LLVMIsALoadInst(instruction).is_null() {
            LLVMTypeOf(LLVMGetOperand(instruction, 0))
        } else {
            LLVMTypeOf(instruction)
        };
        if LLVMGetTypeKind(accessed) != LLVMTypeKind::LLVMPointerTypeKind {
            return None;
        }
        let tag = node_operands(LLVMGetMetadata(instruction, tbaa.kind))?;
        let (&base, &access) = (tag.first()?, tag.get(1)?);
        let mut offset = constant(*tag.get(2)?)?;
        if md_string(*node_operands(access)?.first()?)? == "omnipotent char" {
            return None;
        }
        let mut node = base;
        let mut innermost = None;
        for _ in 0..64 {
            if node == access {
                let (node, offset) = innermost?;
                return Some(format!("{}+{offset}", tbaa.struct_name(node)?));
            }
            let operands = node_operands(node)?;
            let members: Vec<(LLVMValueRef, u64)> =
                operands[1..].chunks_exact(2).map(|pair| Some((pair[0], constant(pair[1])?))).collect::<Option<_>>()?;
            let start = members.iter().map(|&(_, at)| at).filter(|&at| at <= offset).max()?;
            let mut at_start = members.iter().filter(|&&(_, at)| at == start);
            let (member, _) = *at_start.next()?;
            if at_start.next().is_some() {
                return None;
            }
            innermost = Some((node, offset));
            offset -= start;
            node = member;
        }
        None
    }
}

impl Tbaa {
    /// A struct node's name, or `(anonymous)#N` for a `typedef struct { … }`.
    unsafe fn struct_name(&mut self, node: LLVMValueRef) -> Option<String> {
        // SAFETY: `node` is a type node, whose first operand is its name.
        let name = unsafe { md_string(*node_operands(node)?.first()?)? };
        if !name.is_empty() {
            return Some(name);
        }
        let next = self.anonymous.len();
        Some(format!("(anonymous)#{}", self.anonymous.entry(node).or_insert(next)))
    }
}

/// The operands of a metadata node, `None` for anything else.
unsafe fn node_operands(node: LLVMValueRef) -> Option<Vec<LLVMValueRef>> {
    // SAFETY: `node` is null or a valid value; only metadata nodes are asked for operands.
    unsafe {
        if node.is_null() || LLVMIsAMDNode(node).is_null() || !LLVMIsAMDString(node).is_null() {
            return None;
        }
        let mut operands = vec![std::ptr::null_mut(); LLVMGetMDNodeNumOperands(node) as usize];
        LLVMGetMDNodeOperands(node, operands.as_mut_ptr());
        Some(operands)
    }
}

unsafe fn md_string(value: LLVMValueRef) -> Option<String> {
    let mut len = 0;
    // SAFETY: LLVMGetMDString returns null for anything but a metadata string.
    unsafe {
        let pointer = LLVMGetMDString(value, &mut len);
        (!pointer.is_null()).then(|| text(pointer, len as usize))
    }
}

unsafe fn constant(value: LLVMValueRef) -> Option<u64> {
    // SAFETY: `value` is null or a valid value.
    unsafe { (!value.is_null() && !LLVMIsAConstantInt(value).is_null()).then(|| LLVMConstIntGetZExtValue(value)) }
}

unsafe fn record_constant_gep(operand: LLVMValueRef, sidecar: &mut Sidecar) {
    // SAFETY: `operand` is a valid value; constant expressions have constant operands.
    unsafe {
        if LLVMIsAConstantExpr(operand).is_null() || LLVMGetConstOpcode(operand) != LLVMOpcode::LLVMGetElementPtr {
            return;
        }
        let base = LLVMGetOperand(operand, 0);
        if LLVMIsAGlobalVariable(base).is_null() {
            return;
        }
        let indices: Vec<Option<u64>> = (1..LLVMGetNumOperands(operand).max(1) as u32)
            .map(|index| {
                let value = LLVMGetOperand(operand, index);
                (!LLVMIsAConstantInt(value).is_null()).then(|| LLVMConstIntGetZExtValue(value))
            })
            .collect();
        let key = (value_name(base), indices);
        if !sidecar.constant_geps.contains_key(&key) {
            let source = LlvmType(LLVMGetGEPSourceElementType(operand));
            sidecar.constant_geps.insert(key.clone(), gep_key(source, &key.1));
        }
    }
}

unsafe fn scan_global(global: LLVMValueRef, sidecar: &mut Sidecar) {
    // SAFETY: `global` is a valid global variable; its initializer, if any, is a constant.
    unsafe {
        let name = value_name(global);
        let field = global_field(&name, LLVMGlobalGetValueType(global));
        if let Some(field) = &field {
            sidecar.global_fields.insert(name.clone(), field.clone());
        }
        let initializer = LLVMGetInitializer(global);
        if initializer.is_null() {
            return;
        }
        match name.as_str() {
            "llvm.global_ctors" => sidecar.constructors.extend(structor_functions(initializer)),
            "llvm.global_dtors" => sidecar.destructors.extend(structor_functions(initializer)),
            // These only keep symbols alive for the linker; they are not references from code.
            "llvm.used" | "llvm.compiler.used" => {}
            _ => {
                // A struct's members name their own fields; an array or pointer global is one field.
                let outer = field.filter(|field| field.starts_with('@'));
                let mut contents = RawInitializer::default();
                walk_constant(initializer, outer, &mut contents);
                sidecar.initializers.insert(name, contents);
            }
        }
    }
}

/// The field that a direct access to a global of type `ty` touches.
fn global_field(name: &str, ty: LLVMTypeRef) -> Option<String> {
    match gep_key(LlvmType(ty), &[Some(0)]) {
        GepKey::Field(field) | GepKey::Object(field) => Some(field),
        GepKey::NoStruct => Some(format!("@{name}")),
        GepKey::Untyped => None,
    }
}

/// The functions of `[N x { i32, ptr, ptr }]` constructor/destructor lists.
unsafe fn structor_functions(list: LLVMValueRef) -> Vec<String> {
    // SAFETY: `list` is a constant array of constant structs.
    unsafe {
        (0..LLVMGetNumOperands(list).max(0) as u32)
            .map(|index| LLVMGetOperand(list, index))
            .filter(|entry| LLVMGetNumOperands(*entry) >= 2)
            .map(|entry| LLVMGetOperand(entry, 1))
            .filter(|function| !LLVMIsAFunction(*function).is_null())
            .map(|function| value_name(function))
            .collect()
    }
}

/// Collects the functions and globals in a constant, with the struct field each sits in.
unsafe fn walk_constant(constant: LLVMValueRef, field: Option<String>, out: &mut RawInitializer) {
    // SAFETY: `constant` is a valid constant; aggregates have their elements as operands.
    unsafe {
        if !LLVMIsAFunction(constant).is_null() {
            out.functions.push((field, value_name(constant)));
        } else if !LLVMIsAGlobalAlias(constant).is_null() {
            walk_constant(LLVMAliasGetAliasee(constant), field, out);
        } else if !LLVMIsAGlobalVariable(constant).is_null() {
            out.globals.push(value_name(constant));
        } else if !LLVMIsAConstantStruct(constant).is_null() {
            let ty = LLVMTypeOf(constant);
            let name = struct_name(ty);
            for index in 0..LLVMGetNumOperands(constant).max(0) as u32 {
                let field = name.as_deref().map(|name| field_name(name, index.into()));
                walk_constant(LLVMGetOperand(constant, index), field, out);
            }
        } else if !LLVMIsAConstantArray(constant).is_null() || !LLVMIsAConstantVector(constant).is_null() {
            for index in 0..LLVMGetNumOperands(constant).max(0) as u32 {
                walk_constant(LLVMGetOperand(constant, index), field.clone(), out);
            }
        } else if !LLVMIsAConstantExpr(constant).is_null() {
            for index in 0..LLVMGetNumOperands(constant).max(0) as u32 {
                walk_constant(LLVMGetOperand(constant, index), None, out);
            }
        }
    }
}

unsafe fn struct_name(ty: LLVMTypeRef) -> Option<String> {
    // SAFETY: `ty` is a struct type; literal structs have no name (null).
    unsafe {
        let name = LLVMGetStructName(ty);
        (!name.is_null()).then(|| CStr::from_ptr(name).to_string_lossy().into_owned())
    }
}

unsafe fn value_name(value: LLVMValueRef) -> String {
    let mut len = 0;
    // SAFETY: LLVMGetValueName2 returns a pointer to `len` bytes owned by the value.
    unsafe { text(LLVMGetValueName2(value, &mut len), len) }
}

unsafe fn text(pointer: *const c_char, len: usize) -> String {
    if pointer.is_null() {
        return String::new();
    }
    // SAFETY: the caller passes a pointer to `len` readable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(pointer.cast::<u8>(), len) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// An LLVM type seen through the C API.
struct LlvmType(LLVMTypeRef);

impl TypeView for LlvmType {
    fn shape(&self) -> Shape<LlvmType> {
        // SAFETY: `self.0` is a valid type of a live module.
        unsafe {
            match LLVMGetTypeKind(self.0) {
                LLVMTypeKind::LLVMStructTypeKind => Shape::Struct {
                    name: struct_name(self.0),
                    fields: (0..LLVMCountStructElementTypes(self.0))
                        .map(|index| LlvmType(LLVMStructGetTypeAtIndex(self.0, index)))
                        .collect(),
                },
                LLVMTypeKind::LLVMArrayTypeKind
                | LLVMTypeKind::LLVMVectorTypeKind
                | LLVMTypeKind::LLVMScalableVectorTypeKind => Shape::Sequence(LlvmType(LLVMGetElementType(self.0))),
                _ => Shape::Scalar,
            }
        }
    }
}
