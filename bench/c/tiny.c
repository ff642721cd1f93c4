/* The smallest useful static program: exits 0 at once. */
#include <unistd.h>
int main(void)
{
	_exit(0);
}
