//! PLT stubs → the slot they jump through (and so the symbol or IFUNC behind them).
//!
//! All three flavours: lazy `.plt` entries (`jmp *slot; push; jmp .plt0`), IBT's `.plt.sec`
//! (`endbr64; bnd jmp *slot`) and `.plt.got`. Stubs are decoded one instruction after another;
//! each `jmp *slot(%rip)` maps the start of its stub.

use rustc_hash::FxHashMap as HashMap;

use iced_x86::{Decoder, DecoderOptions, FlowControl, Mnemonic};

use super::image::Image;

/// Stub start → the GOT slot its indirect jump reads.
pub(crate) fn stubs(image: &Image<'_>) -> HashMap<u64, u64> {
    let mut stubs = HashMap::default();
    for name in [".plt", ".plt.sec", ".plt.got", ".iplt"] {
        let Some((start, end)) = image.section_range(name) else { continue };
        let Some(bytes) = image.bytes_at(start) else { continue };
        let bytes = &bytes[..((end - start) as usize).min(bytes.len())];
        let mut decoder = Decoder::with_ip(64, bytes, start, DecoderOptions::NONE);
        let mut stub_start = None;
        while decoder.can_decode() {
            let instruction = decoder.decode();
            let padding = matches!(instruction.mnemonic(), Mnemonic::Nop | Mnemonic::Int3);
            if stub_start.is_none() && !padding {
                stub_start = Some(instruction.ip());
            }
            match instruction.flow_control() {
                FlowControl::IndirectBranch if instruction.is_ip_rel_memory_operand() => {
                    if let Some(stub) = stub_start.take() {
                        stubs.insert(stub, instruction.ip_rel_memory_address());
                    }
                }
                FlowControl::UnconditionalBranch | FlowControl::IndirectBranch => stub_start = None,
                _ => {}
            }
        }
    }
    stubs
}
