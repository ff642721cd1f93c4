/* Copies a file into a memfd and fexecve()s it: the fileless execution that a dropper
 * uses. Usage: memfd_exec FILE [ARGS...] (argv[1..] become the new program's argv). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv, char **envp)
{
	if (argc < 2) {
		fprintf(stderr, "usage: memfd_exec FILE [ARGS...]\n");
		return 2;
	}
	int src = open(argv[1], O_RDONLY);
	struct stat st;
	if (src < 0 || fstat(src, &st) < 0) {
		perror(argv[1]);
		return 1;
	}
	int mfd = memfd_create("payload", MFD_CLOEXEC);
	if (mfd < 0) {
		perror("memfd_create");
		return 1;
	}
	off_t off = 0;
	while (off < st.st_size)
		if (sendfile(mfd, src, &off, st.st_size - off) <= 0) {
			perror("sendfile");
			return 1;
		}
	fexecve(mfd, argv + 1, envp);
	perror("fexecve");
	return 1;
}
