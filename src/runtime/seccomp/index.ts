export {
  AUDIT_ARCH, BPF_MAXINSNS, SECCOMP_RET, compileSeccomp, currentSeccompArch, defaultSeccompProgram, seccompFilterFlags,
  type SeccompCompileOptions,
} from './compile.js';
export { defaultSeccompProfile } from './default-profile.js';
export {
  MAX_ERRNO, SECCOMP_ACTIONS, SECCOMP_ARCHITECTURES, SECCOMP_FLAGS, SECCOMP_OPS, parseKernelVersion, parseSeccompProfile,
  type SeccompAction, type SeccompArchMap, type SeccompArchitecture, type SeccompArg, type SeccompFilter, type SeccompFlag,
  type SeccompOp, type SeccompProfile, type SeccompSyscall,
} from './profile.js';
export { syscallNumber, syscallTable, type SeccompArch } from './syscalls.js';
