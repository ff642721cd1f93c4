/* Runs `argv[2..]` N times (fork + execv + waitpid) and prints the mean microseconds
 * per iteration, then one line per CHUNK iterations with that chunk's mean (a block's
 * median chunk is robust to a short burst of other load, its mean is not), then
 * `cpu_us T`: the CPU time (user + system) this loop and its children used, as the kernel
 * accounted it. That includes the eBPF programs that ran on their exec, fork and exit,
 * which run in the task's own context.
 * Static, so it runs inside a busybox-only container image. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 50
#define MAX_CHUNKS 100000

static double us_between(const struct timespec *a, const struct timespec *b)
{
	return ((b->tv_sec - a->tv_sec) * 1e9 + (b->tv_nsec - a->tv_nsec)) / 1e3;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: exec_loop N PROGRAM [ARGS...]\n");
		return 2;
	}
	long n = atol(argv[1]);
	long chunks = n / CHUNK < MAX_CHUNKS ? n / CHUNK : MAX_CHUNKS;
	double *chunk_us = calloc(chunks > 0 ? chunks : 1, sizeof(double));
	if (!chunk_us)
		return 1;
	struct timespec a, b, c;
	clock_gettime(CLOCK_MONOTONIC, &a);
	c = a;
	for (long i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0) {
			execv(argv[2], argv + 2);
			_exit(127);
		}
		int status;
		if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "child %ld failed\n", i);
			return 1;
		}
		if ((i + 1) % CHUNK == 0 && (i + 1) / CHUNK <= chunks) {
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			chunk_us[(i + 1) / CHUNK - 1] = us_between(&c, &now) / CHUNK;
			c = now;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.3f\n", us_between(&a, &b) / n);
	for (long i = 0; i < chunks; i++)
		printf("%.3f\n", chunk_us[i]);
	struct rusage self, children;
	getrusage(RUSAGE_SELF, &self);
	getrusage(RUSAGE_CHILDREN, &children);
	double cpu_us = 0;
	struct timeval t[] = { self.ru_utime, self.ru_stime, children.ru_utime, children.ru_stime };
	for (int i = 0; i < 4; i++)
		cpu_us += t[i].tv_sec * 1e6 + t[i].tv_usec;
	printf("cpu_us %.0f\n", cpu_us);
	return 0;
}
