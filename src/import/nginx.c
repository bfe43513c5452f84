#include "import/nginx.h"
int lg_import_nginx(const char *file, FILE *out, FILE *diag) { (void)out; fprintf(diag, "%s: not yet\n", file); return -1; }
