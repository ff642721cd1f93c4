/* The smallest useful static program: exits 0 at once. TAG changes its bytes (tests build
 * a "replacement" with -DTAG='"other"'), not its behaviour. */
#include <unistd.h>

#ifndef TAG
#define TAG "tiny"
#endif
__attribute__((used)) static const char tag[] = TAG;

int main(void)
{
	_exit(0);
}
