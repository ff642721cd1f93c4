/* read_then_exec FILE [SECONDS]: maps FILE readable and reads every page of it, waits a
 * second (long enough for the daemon to judge those faults as a read), then makes the
 * mapping executable with mprotect, which faults nothing, and stays alive SECONDS
 * (default 2). Only a hook on mprotect sees the code. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	int fd = open(argv[1], O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0 || st.st_size == 0) {
		perror("open");
		return 1;
	}
	volatile unsigned char *p = mmap(0, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	unsigned sum = 0;
	for (off_t i = 0; i < st.st_size; i += 4096)
		sum += p[i];
	sleep(1);
	if (mprotect((void *)p, st.st_size, PROT_READ | PROT_EXEC) != 0) {
		perror("mprotect");
		return 1;
	}
	printf("mapped executable (%u)\n", sum);
	fflush(stdout);
	sleep(argc > 2 ? atoi(argv[2]) : 2);
	return 0;
}
