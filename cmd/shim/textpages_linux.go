package main

/*
#define _GNU_SOURCE
#include <link.h>
#include <sys/mman.h>
#include <unistd.h>

// shim_text_cb unmaps the pages of the executable's read-only segments
// (the first object dl_iterate_phdr reports) from this process: clean
// file pages, mapped again (4 KB ones, no huge mappings) when run or
// read. Pages shared with a writable segment are left alone.
static int shim_text_cb(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	(void)data;
	uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || (ph->p_flags & PF_W))
			continue;
		uintptr_t start = (info->dlpi_addr + ph->p_vaddr + pg - 1) & ~(pg - 1);
		uintptr_t end = (info->dlpi_addr + ph->p_vaddr + ph->p_memsz) & ~(pg - 1);
		if (end <= start)
			continue;
		madvise((void *)start, end - start, MADV_NOHUGEPAGE);
		madvise((void *)start, end - start, MADV_DONTNEED);
	}
	return 1;
}

static void shim_drop_text(void) { dl_iterate_phdr(shim_text_cb, NULL); }
*/
import "C"

// dropStartupText unmaps the binary's code and read-only data from the
// daemon once it has started: start-up (package initialisation, recovery)
// runs code no request runs again, and its pages would otherwise count in
// the daemon's resident memory for as long as it runs.
func dropStartupText() { C.shim_drop_text() }
