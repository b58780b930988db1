/*
 * The value of one hexadecimal digit, either case: 0..15, or -1 for any
 * other character. Shared by the JSON scanner (\u escapes), the file-name
 * codec and the HTTP code (percent escapes).
 */
#ifndef BARREL_HEX_H
#define BARREL_HEX_H

static inline int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

#endif
