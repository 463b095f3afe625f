/*
 * A stand-in for a vmlinux, for host/tests/profile_gen.rs: a `linux_banner`, a few symbols, and
 * structs shaped like the kernel's awkward cases (typedefs, qualifiers, anonymous structs and
 * unions, nested embedded structs, arrays, bit-fields, flexible arrays).
 *
 * Built twice by the test: `gcc -g -c` gives the object `profile gen` reads (a relocatable ELF,
 * whose DWARF needs its relocations applied), and `gcc -g -DPRINT_LAYOUT` gives a program that
 * prints the compiler's own offsetof/sizeof for every path the test checks (and is itself a linked
 * ELF with DWARF, read as-is).
 */
#include <stddef.h>
#include <stdio.h>

#ifndef FIXTURE_RELEASE
#define FIXTURE_RELEASE "6.1.0-fixture"
#endif

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef u64 u64_alias;
typedef const volatile u32 cv_u32;

struct list_head {
	struct list_head *next, *prev;
};

struct inner {
	u32 a;
	u64 b;
	char tag[3];
};
typedef struct inner inner_t;

struct deep {
	u16 level;
	struct {
		char pad;
		union {
			u32 deep_word;
			struct inner deep_inner;
		};
	};
};

struct outer {
	char c;
	inner_t in;
	struct {
		u32 anon_a;
		union {
			u64 anon_u1;
			char anon_u2[12];
		};
	};
	union {
		struct list_head link;
		u64 raw[2];
	} named_u;
	cv_u32 qual;
	_Atomic int atom;
	const struct inner *ptr;
	struct inner arr[4];
	u32 matrix[3][5];
	void (*fn)(int);
	unsigned int flag : 3;
	unsigned int other_flag : 5;
	u64_alias aliased;
	struct deep deep;
	char zero[0];
	u32 after_zero;
	char flex[];
};

/* Declared but never defined: must not be mistaken for a definition. */
struct opaque;
struct opaque *fixture_opaque;

const char linux_banner[] = "Linux version " FIXTURE_RELEASE " (xsched@fixture) (gcc) #1 SMP\n";
struct outer fixture_outer = { .c = 1 };
struct deep fixture_deep;
int fixture_counter = 42;
static int fixture_local = 7;

int fixture_touch(void)
{
	return fixture_local + fixture_counter;
}

#ifdef PRINT_LAYOUT
#define SIZE(S) printf("%s . %zu %zu\n", #S, (size_t)0, sizeof(struct S))
#define FIELD(S, path) \
	printf("%s %s %zu %zu\n", #S, #path, offsetof(struct S, path), sizeof(((struct S *)0)->path))
/* A flexible array member has no size; DWARF gives it none either (0). */
#define FLEX(S, path) printf("%s %s %zu %zu\n", #S, #path, offsetof(struct S, path), (size_t)0)

int main(void)
{
	SIZE(outer);
	FIELD(outer, c);
	FIELD(outer, in);
	FIELD(outer, in.a);
	FIELD(outer, in.b);
	FIELD(outer, in.tag);
	FIELD(outer, anon_a);
	FIELD(outer, anon_u1);
	FIELD(outer, anon_u2);
	FIELD(outer, named_u);
	FIELD(outer, named_u.link);
	FIELD(outer, named_u.link.prev);
	FIELD(outer, named_u.raw);
	FIELD(outer, qual);
	FIELD(outer, atom);
	FIELD(outer, ptr);
	FIELD(outer, arr);
	FIELD(outer, matrix);
	FIELD(outer, fn);
	FIELD(outer, aliased);
	FIELD(outer, deep);
	FIELD(outer, deep.level);
	FIELD(outer, deep.deep_word);
	FIELD(outer, deep.deep_inner);
	FIELD(outer, deep.deep_inner.b);
	FIELD(outer, zero);
	FIELD(outer, after_zero);
	FLEX(outer, flex);
	SIZE(inner);
	FIELD(inner, a);
	FIELD(inner, b);
	FIELD(inner, tag);
	SIZE(deep);
	FIELD(deep, level);
	FIELD(deep, pad);
	FIELD(deep, deep_word);
	FIELD(deep, deep_inner.tag);
	SIZE(list_head);
	FIELD(list_head, next);
	FIELD(list_head, prev);
	return fixture_touch() == 49 ? 0 : 1;
}
#endif
