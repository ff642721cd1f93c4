/* dyn_hello [LIB]: a dynamically linked program (ld.so, libc, libhelper.so); with LIB,
 * dlopen()s it too, as a plugin loader would. Then calls helper(). */
#include <dlfcn.h>
#include <stdio.h>

void helper(void);

int main(int argc, char **argv)
{
	if (argc > 1 && !dlopen(argv[1], RTLD_NOW)) {
		fprintf(stderr, "dlopen %s: %s\n", argv[1], dlerror());
		return 1;
	}
	helper();
	return 0;
}
