/* memfd_dlopen LIB [SECONDS]: copies LIB into a memfd and dlopen()s it through
 * /proc/self/fd (code mapped from no file), then stays alive SECONDS (default 2), as a
 * payload that runs would. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	int in = open(argv[1], O_RDONLY);
	int fd = memfd_create("payload", 0);
	if (in < 0 || fd < 0) {
		perror("open");
		return 1;
	}
	char buf[65536];
	ssize_t n;
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(fd, buf, n) != n)
			return 1;
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (!dlopen(path, RTLD_NOW)) {
		fprintf(stderr, "dlopen %s: %s\n", path, dlerror());
		return 1;
	}
	sleep(argc > 2 ? atoi(argv[2]) : 2);
	return 0;
}
