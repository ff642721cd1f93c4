/* libhelper.so: the shared library the files tests' dynamically linked program uses.
 * -DTAG="..." gives another build with other bytes and the same symbols (a tampered
 * copy); its constructor prints the tag too, which is what a preloaded library does. */
#include <stdio.h>

#ifndef TAG
#define TAG "helper"
#endif

__attribute__((constructor)) static void loaded(void)
{
	if (TAG[0] != 'h')	/* the tampered copies announce themselves */
		fprintf(stderr, "%s loaded\n", TAG);
}

int helper_quiet(void)
{
	return 42;
}

void helper(void)
{
	puts(TAG);
}
