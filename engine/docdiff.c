/* Unified diffs of two bodies through libgit2's patch API (docdiff.h). */
#include "config.h"

#include <errno.h>
#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/docdiff.h"
#include "engine/error.h"

int doc_diff(const char *a, size_t alen, const char *alabel, const char *b,
	     size_t blen, const char *blabel, uint32_t context, char **out,
	     size_t *outlen, char *err)
{
	git_diff_options opts;
	git_patch *patch = NULL;
	git_buf buf = { 0 };
	const git_error *e;
	int rc = 0;

	*out = NULL;
	*outlen = 0;
	git_libgit2_init();
	git_diff_options_init(&opts, GIT_DIFF_OPTIONS_VERSION);
	opts.flags |= GIT_DIFF_FORCE_TEXT;
	opts.context_lines = context;
	if (git_patch_from_buffers(&patch, a, alen, alabel, b, blen, blabel,
				   &opts) ||
	    git_patch_to_buf(&buf, patch)) {
		e = git_error_last();
		snprintf(err, DOCDIFF_ERRLEN, "diff: %s",
			 e ? e->message : "failed");
		rc = BARREL_E_INVALID;
	} else if ((*out = malloc(buf.size + 1))) {
		memcpy(*out, buf.ptr ? buf.ptr : "", buf.size);
		(*out)[buf.size] = '\0';
		*outlen = buf.size;
	} else {
		rc = -ENOMEM;
	}
	git_buf_dispose(&buf);
	git_patch_free(patch);
	git_libgit2_shutdown();
	return rc;
}
