/*
 * Unsafe libc calls, banned at compile time (as git's banned.h).
 * Forced onto every compile line by Makefile.am (-include).
 */
#ifndef BARREL_BANNED_H
#define BARREL_BANNED_H

/* The headers that declare them come first, so their prototypes survive. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BANNED(func) sorry_##func##_is_a_banned_function

#undef strcpy
#define strcpy(x, y) BANNED(strcpy)
#undef strcat
#define strcat(x, y) BANNED(strcat)
#undef sprintf
#define sprintf(...) BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) BANNED(vsprintf)
#undef strtok
#define strtok(x, y) BANNED(strtok)
#undef gets
#define gets(x) BANNED(gets)

#endif
