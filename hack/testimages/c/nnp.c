/*
 * nnp: installed setuid root in the nonewprivs test image. It reports the
 * effective uid it runs with: 0 when the setuid bit took effect, the caller's
 * uid when no_new_privs (or a nosuid mount) stopped it.
 */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	printf("Effective uid: %d\n", (int)geteuid());
	return fflush(stdout) == 0 ? 0 : 1;
}
