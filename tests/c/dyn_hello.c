/* dyn_hello [LIB | -q]: a dynamically linked program (ld.so, libc, libhelper.so); with LIB,
 * dlopen()s it too, as a plugin loader would. Then calls helper(), which prints; with -q
 * it calls helper_quiet() instead (for exec loops). */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

void helper(void);
int helper_quiet(void);

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "-q") == 0)
		return helper_quiet() == 42 ? 0 : 1;
	if (argc > 1 && !dlopen(argv[1], RTLD_NOW)) {
		fprintf(stderr, "dlopen %s: %s\n", argv[1], dlerror());
		return 1;
	}
	helper();
	return 0;
}
