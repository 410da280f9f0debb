/* xsave_size: the size of the XSAVE area for every state component the processor lets XCR0
 * enable, CPUID.(EAX=0DH,ECX=0):ECX. The host kernel sizes its NT_X86_XSTATE regset from the
 * same components (fpu_user_cfg.max_size), so this is an independent check of what
 * kernel_ref/xstate.py measures with ptrace. */
#include <cpuid.h>
#include <stdio.h>

int main(void)
{
    unsigned eax, ebx, ecx, edx;

    if (!__get_cpuid_count(0xD, 0, &eax, &ebx, &ecx, &edx))
        return 1;
    printf("%u\n", ecx);
    return 0;
}
