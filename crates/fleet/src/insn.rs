//! BPF instructions, one named constructor per kind (`mov64_imm`, `ldx_w`, `stx_w`, `call`,
//! `jeq_imm`, …), and [`Asm`], which collects them and resolves jumps to [`Label`]s: a jump
//! names where it goes, the offset is computed when the program is finished, never counted by
//! hand. Only what the fleet programs use is here.

use std::fmt;

/// A register. `R1`–`R5` carry helper arguments and are clobbered by calls; `R6`–`R9` survive
/// calls; `R10` is the read-only frame pointer (the stack grows down from it, 512 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reg {
    R0 = 0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
}

pub use Reg::*;

/// One 8-byte instruction, as the kernel reads it (`struct bpf_insn`).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u8,
    /// `dst` in the low nibble, `src` in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Instruction classes, sizes, modes and operations (include/uapi/linux/bpf_common.h, bpf.h).
pub const LD: u8 = 0x00;
pub const LDX: u8 = 0x01;
pub const ST: u8 = 0x02;
pub const STX: u8 = 0x03;
pub const ALU: u8 = 0x04;
pub const JMP: u8 = 0x05;
pub const JMP32: u8 = 0x06;
pub const ALU64: u8 = 0x07;

pub const W: u8 = 0x00;
#[cfg(test)]
pub const H: u8 = 0x08;
pub const B: u8 = 0x10;
pub const DW: u8 = 0x18;

pub const IMM: u8 = 0x00;
pub const MEM: u8 = 0x60;
/// `BPF_ATOMIC` (the old `BPF_XADD`), with the operation in `imm`.
pub const ATOMIC: u8 = 0xc0;

pub const K: u8 = 0x00;
pub const X: u8 = 0x08;

pub const ADD: u8 = 0x00;
pub const MUL: u8 = 0x20;
pub const OR: u8 = 0x40;
pub const AND: u8 = 0x50;
#[cfg(test)]
pub const LSH: u8 = 0x60;
pub const MOV: u8 = 0xb0;

pub const JA: u8 = 0x00;
pub const JEQ: u8 = 0x10;
pub const JGT: u8 = 0x20;
pub const JSET: u8 = 0x40;
pub const JNE: u8 = 0x50;
pub const JLT: u8 = 0xa0;
pub const JSGT: u8 = 0x60;
pub const JSLT: u8 = 0xc0;
pub const CALL: u8 = 0x80;
pub const EXIT: u8 = 0x90;

/// `src` of the first half of a 64-bit immediate load that names a map by file descriptor.
pub const PSEUDO_MAP_FD: u8 = 1;

impl Insn {
    const fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (dst as u8) | ((src as u8) << 4),
            off,
            imm,
        }
    }

    pub fn dst(self) -> u8 {
        self.regs & 0x0f
    }

    pub fn src(self) -> u8 {
        self.regs >> 4
    }

    pub fn class(self) -> u8 {
        self.code & 0x07
    }

    /// A conditional or unconditional jump (not a call, not an exit).
    pub fn is_jump(self) -> bool {
        matches!(self.class(), JMP | JMP32) && !matches!(self.code & 0xf0, CALL | EXIT)
    }
}

// ---- moves and arithmetic ----

/// `dst = imm` (sign-extended to 64 bits).
pub const fn mov64_imm(dst: Reg, imm: i32) -> Insn {
    Insn::new(ALU64 | MOV | K, dst, R0, 0, imm)
}

/// `dst = src`.
pub const fn mov64_reg(dst: Reg, src: Reg) -> Insn {
    Insn::new(ALU64 | MOV | X, dst, src, 0, 0)
}

/// `dst = (u32) imm`: the upper half cleared (an immediate above `i32::MAX` stays positive).
pub const fn mov32_imm(dst: Reg, imm: u32) -> Insn {
    Insn::new(ALU | MOV | K, dst, R0, 0, imm as i32)
}

/// `dst += imm`.
pub const fn add64_imm(dst: Reg, imm: i32) -> Insn {
    Insn::new(ALU64 | ADD | K, dst, R0, 0, imm)
}

/// `dst += src`.
pub const fn add64_reg(dst: Reg, src: Reg) -> Insn {
    Insn::new(ALU64 | ADD | X, dst, src, 0, 0)
}

/// `dst *= imm`.
pub const fn mul64_imm(dst: Reg, imm: i32) -> Insn {
    Insn::new(ALU64 | MUL | K, dst, R0, 0, imm)
}

/// `dst *= src`.
pub const fn mul64_reg(dst: Reg, src: Reg) -> Insn {
    Insn::new(ALU64 | MUL | X, dst, src, 0, 0)
}

/// `dst = (u32) dst & imm`, in 32 bits (the upper half cleared).
pub const fn and32_imm(dst: Reg, imm: u32) -> Insn {
    Insn::new(ALU | AND | K, dst, R0, 0, imm as i32)
}

/// `dst |= imm` (sign-extended).
pub const fn or64_imm(dst: Reg, imm: i32) -> Insn {
    Insn::new(ALU64 | OR | K, dst, R0, 0, imm)
}

/// `dst |= src`.
pub const fn or64_reg(dst: Reg, src: Reg) -> Insn {
    Insn::new(ALU64 | OR | X, dst, src, 0, 0)
}

// ---- memory ----

/// `dst = *(u32 *)(src + off)`, zero-extended.
pub const fn ldx_w(dst: Reg, src: Reg, off: i16) -> Insn {
    Insn::new(LDX | MEM | W, dst, src, off, 0)
}

/// `dst = *(u8 *)(src + off)`.
pub const fn ldx_b(dst: Reg, src: Reg, off: i16) -> Insn {
    Insn::new(LDX | MEM | B, dst, src, off, 0)
}

/// `dst = *(u64 *)(src + off)`: pointers in a context.
pub const fn ldx_dw(dst: Reg, src: Reg, off: i16) -> Insn {
    Insn::new(LDX | MEM | DW, dst, src, off, 0)
}

/// `*(u32 *)(dst + off) = src`.
pub const fn stx_w(dst: Reg, off: i16, src: Reg) -> Insn {
    Insn::new(STX | MEM | W, dst, src, off, 0)
}

/// `*(u8 *)(dst + off) = src`.
pub const fn stx_b(dst: Reg, off: i16, src: Reg) -> Insn {
    Insn::new(STX | MEM | B, dst, src, off, 0)
}

/// `lock *(u64 *)(dst + off) += src`: `BPF_STX | BPF_DW | BPF_ATOMIC` with `BPF_ADD`, the
/// encoding `BPF_XADD` always had (every kernel takes it; on a map value the verifier wants the
/// pointer checked non-null first).
pub const fn atomic_add64(dst: Reg, off: i16, src: Reg) -> Insn {
    Insn::new(STX | ATOMIC | DW, dst, src, off, ADD as i32)
}

/// `*(u32 *)(dst + off) = imm`.
pub const fn st_w(dst: Reg, off: i16, imm: u32) -> Insn {
    Insn::new(ST | MEM | W, dst, R0, off, imm as i32)
}

/// `*(u64 *)(dst + off) = imm` (sign-extended: -1 stores `u64::MAX`).
pub const fn st_dw(dst: Reg, off: i16, imm: i32) -> Insn {
    Insn::new(ST | MEM | DW, dst, R0, off, imm)
}

/// `*(u64 *)(dst + off) = src`: a 64-bit value, or a pointer spilled to the stack.
pub const fn stx_dw(dst: Reg, off: i16, src: Reg) -> Insn {
    Insn::new(STX | MEM | DW, dst, src, off, 0)
}

/// `dst = imm`, a full 64-bit constant: two instruction slots.
pub const fn ld_imm64(dst: Reg, imm: u64) -> [Insn; 2] {
    [
        Insn::new(LD | IMM | DW, dst, R0, 0, imm as u32 as i32),
        Insn::new(0, R0, R0, 0, (imm >> 32) as u32 as i32),
    ]
}

/// `dst = map` (by file descriptor): two instruction slots; the kernel swaps in the map.
pub const fn ld_map_fd(dst: Reg, fd: i32) -> [Insn; 2] {
    [
        Insn {
            code: LD | IMM | DW,
            regs: (dst as u8) | (PSEUDO_MAP_FD << 4),
            off: 0,
            imm: fd,
        },
        Insn::new(0, R0, R0, 0, 0),
    ]
}

// ---- calls ----

/// Call kernel helper number `helper`: arguments in `R1`–`R5`, result in `R0`.
pub const fn call(helper: i32) -> Insn {
    Insn::new(JMP | CALL, R0, R0, 0, helper)
}

/// Return `R0`.
pub const fn exit() -> Insn {
    Insn::new(JMP | EXIT, R0, R0, 0, 0)
}

// ---- jumps (the offset is filled in by `Asm::jump`) ----

/// Always.
pub const fn ja() -> Insn {
    Insn::new(JMP | JA, R0, R0, 0, 0)
}

/// If `dst == imm` (64-bit compare, `imm` sign-extended).
pub const fn jeq_imm(dst: Reg, imm: i32) -> Insn {
    Insn::new(JMP | JEQ | K, dst, R0, 0, imm)
}

/// If `dst == src` (64-bit compare).
pub const fn jeq_reg(dst: Reg, src: Reg) -> Insn {
    Insn::new(JMP | JEQ | X, dst, src, 0, 0)
}

/// If `dst != src` (64-bit compare).
pub const fn jne_reg(dst: Reg, src: Reg) -> Insn {
    Insn::new(JMP | JNE | X, dst, src, 0, 0)
}

/// If `dst != imm` (64-bit compare).
pub const fn jne_imm(dst: Reg, imm: i32) -> Insn {
    Insn::new(JMP | JNE | K, dst, R0, 0, imm)
}

/// If `(u32) dst != imm` (32-bit compare: any 32-bit pattern).
pub const fn jne32_imm(dst: Reg, imm: u32) -> Insn {
    Insn::new(JMP32 | JNE | K, dst, R0, 0, imm as i32)
}

/// If `dst > imm`, unsigned.
pub const fn jgt_imm(dst: Reg, imm: i32) -> Insn {
    Insn::new(JMP | JGT | K, dst, R0, 0, imm)
}

/// If `dst < imm`, unsigned.
pub const fn jlt_imm(dst: Reg, imm: i32) -> Insn {
    Insn::new(JMP | JLT | K, dst, R0, 0, imm)
}

/// If `dst > src`, unsigned.
pub const fn jgt_reg(dst: Reg, src: Reg) -> Insn {
    Insn::new(JMP | JGT | X, dst, src, 0, 0)
}

/// If `(i32) dst > imm`, signed 32-bit.
pub const fn jsgt32_imm(dst: Reg, imm: i32) -> Insn {
    Insn::new(JMP32 | JSGT | K, dst, R0, 0, imm)
}

/// If `(i32) dst < imm`, signed 32-bit.
pub const fn jslt32_imm(dst: Reg, imm: i32) -> Insn {
    Insn::new(JMP32 | JSLT | K, dst, R0, 0, imm)
}

/// If `dst & imm != 0`.
pub const fn jset_imm(dst: Reg, imm: i32) -> Insn {
    Insn::new(JMP | JSET | K, dst, R0, 0, imm)
}

/// A place in the program a jump can name before it is known where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

/// A program being written: instructions in order, labels bound to positions, jumps resolved
/// by [`Asm::finish`].
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    /// Where each label is bound (an instruction index), once it is.
    labels: Vec<Option<usize>>,
    /// Jumps to patch: the jump's index and where it goes.
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    /// A new label, bound later with [`Asm::bind`].
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// `label` is the next instruction.
    pub fn bind(&mut self, label: Label) {
        assert!(self.labels[label.0].is_none(), "label bound twice");
        self.labels[label.0] = Some(self.insns.len());
    }

    pub fn push(&mut self, insn: Insn) {
        assert!(!insn.is_jump(), "a jump goes through Asm::jump");
        self.insns.push(insn);
    }

    pub fn push_all(&mut self, insns: impl IntoIterator<Item = Insn>) {
        for insn in insns {
            self.push(insn);
        }
    }

    /// `jump` (one of the jump constructors) to `to`.
    pub fn jump(&mut self, jump: Insn, to: Label) {
        assert!(jump.is_jump(), "not a jump");
        self.fixups.push((self.insns.len(), to));
        self.insns.push(jump);
    }

    /// The program, every jump's offset computed (`target - (jump + 1)`). A label never bound,
    /// or a jump backwards (the verifier refuses loops), is a bug in the generator: it panics.
    pub fn finish(mut self) -> Vec<Insn> {
        for (at, label) in self.fixups {
            let target = self.labels[label.0].expect("every label is bound");
            assert!(target > at, "jumps only go forward");
            let off = i16::try_from(target - at - 1).expect("jump within 32767 instructions");
            self.insns[at].off = off;
        }
        if let Some(dead) = unreachable(&self.insns) {
            panic!("instruction {dead} cannot be reached (the verifier refuses dead code)");
        }
        self.insns
    }
}

/// The first instruction no path from the start reaches, if any.
fn unreachable(insns: &[Insn]) -> Option<usize> {
    let mut seen = vec![false; insns.len()];
    let mut todo = vec![0usize];
    while let Some(at) = todo.pop() {
        if at >= insns.len() || seen[at] {
            continue;
        }
        seen[at] = true;
        let i = insns[at];
        let next = at + 1;
        if i.code == LD | IMM | DW {
            // The second half of a 64-bit immediate is part of this one.
            if let Some(s) = seen.get_mut(next) {
                *s = true;
            }
            todo.push(next + 1);
        } else if i.code == JMP | EXIT {
            // This path ends here.
        } else if i.is_jump() {
            let target = (next as i64 + i64::from(i.off)) as usize;
            todo.push(target);
            if i.code & 0xf0 != JA {
                todo.push(next);
            }
        } else {
            todo.push(next);
        }
    }
    seen.iter().position(|s| !s)
}

impl fmt::Debug for Insn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x} r{} r{} {:+} {}",
            self.code,
            self.dst(),
            self.src(),
            self.off,
            self.imm
        )
    }
}

/// The instructions as the kernel wants them: 8 bytes each, in order.
pub fn bytes(insns: &[Insn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(insns.len() * 8);
    for i in insns {
        out.push(i.code);
        out.push(i.regs);
        out.extend_from_slice(&i.off.to_ne_bytes());
        out.extend_from_slice(&i.imm.to_ne_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_kernels() {
        // As bpftool prints them (BPF_MOV64_IMM(BPF_REG_0, 1) is b7 00 .. 01 00 00 00).
        assert_eq!(bytes(&[mov64_imm(R0, 1)]), [0xb7, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(bytes(&[mov64_reg(R6, R1)]), [0xbf, 0x16, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(&[ldx_w(R2, R6, 20)]), [0x61, 0x62, 20, 0, 0, 0, 0, 0]);
        assert_eq!(
            bytes(&[stx_w(R10, -8, R1)]),
            [0x63, 0x1a, 0xf8, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(bytes(&[call(49)]), [0x85, 0, 0, 0, 49, 0, 0, 0]);
        assert_eq!(bytes(&[exit()]), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        let [first, second] = ld_map_fd(R1, 7);
        assert_eq!(
            bytes(&[first, second]),
            [0x18, 0x11, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(jne32_imm(R1, 0xffff_0000).code, 0x56);
        // BPF_XADD | BPF_DW | BPF_STX (0xdb), imm BPF_ADD.
        assert_eq!(
            bytes(&[atomic_add64(R0, 16, R1)]),
            [0xdb, 0x10, 16, 0, 0, 0, 0, 0]
        );
        assert_eq!(jne32_imm(R1, 0xffff_0000).imm, -65536);
    }

    #[test]
    fn jumps_land_on_their_labels() {
        let mut asm = Asm::new();
        let skip = asm.label();
        let end = asm.label();
        asm.jump(jeq_imm(R1, 3), skip); // 0 → 3
        asm.push(mov64_imm(R0, 0)); // 1
        asm.jump(ja(), end); // 2 → 4
        asm.bind(skip);
        asm.push(mov64_imm(R0, 1)); // 3
        asm.bind(end);
        asm.push(exit()); // 4
        let insns = asm.finish();
        assert_eq!(insns[0].off, 2);
        assert_eq!(insns[2].off, 1);
    }

    #[test]
    #[should_panic(expected = "instruction 1 cannot be reached")]
    fn dead_code_is_a_bug() {
        let mut asm = Asm::new();
        let end = asm.label();
        asm.jump(ja(), end);
        asm.push(mov64_imm(R0, 0));
        asm.bind(end);
        asm.push(exit());
        asm.finish();
    }

    #[test]
    #[should_panic(expected = "every label is bound")]
    fn an_unbound_label_is_a_bug() {
        let mut asm = Asm::new();
        let nowhere = asm.label();
        asm.jump(ja(), nowhere);
        asm.finish();
    }
}
