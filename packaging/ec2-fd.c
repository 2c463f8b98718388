/*
 * ec2-fd.c: Bacula File Daemon glue for the bacula-ec2 backend.
 *
 * This file only defines the link-time symbols that Bacula's metaplugin
 * (src/plugins/fd/pluginlib/metaplugin.cpp) reads; all the work happens in the
 * external backend "ec2-backend", which bacula-fd runs from its own directory
 * (ExePath) and drives over pipes.  See docs: metaplugin-protocol.md, section 8.
 *
 * Compiled as C++ (Bacula's plugin CFLAGS contain "-x c++") and linked with the
 * six pluginlib objects into ec2-fd.so by packaging/build-plugin.sh.
 *
 * Copyright (C) the bacula-ec2 authors.  License: AGPLv3.
 */

#include "pluginlib/pluginlib.h"
#include "pluginlib/metaplugin.h"

/*
 * valid_params[], plugin_items_dump[] and the release are generated from the Python source
 * of truth (bacula_ec2) by packaging/gen_params_header.py.
 */
#include "ec2-fd-params.h"

/* Plugin info, shown by "status client" as ec2(0.1.0). */
const char *PLUGIN_LICENSE       = "AGPLv3";
const char *PLUGIN_AUTHOR        = "bacula-ec2 authors";
const char *PLUGIN_DATE          = "2025";
const char *PLUGIN_VERSION       = EC2_FD_RELEASE;
const char *PLUGIN_DESCRIPTION   = "Bacula Amazon EC2 / EBS plugin (metaplugin, backend ec2-backend)";

/* Compile-time metaplugin settings (metaplugin-protocol.md 8.1). */
const char *PLUGINPREFIX         = "ec2:";          /* FileSet: Plugin = "ec2: ..." */
const char *PLUGINNAME           = "ec2";           /* handshake: "Hello ec2 1" */
const char *PLUGINAPI            = EC2_FD_HELLO_API; /* "1/<release>": checked by the backend */
const char *PLUGINNAMESPACE      = "@amazon-ec2";   /* catalog names: /@amazon-ec2/... */
const bool CUSTOMNAMESPACE       = true;            /* send Namespace=, namespace = always "seen" */
const bool CUSTOMPREVJOBNAME     = true;            /* send PrevJobName= */
const char *BACKEND_CMD          = "ec2-backend";   /* relative to bacula-fd's directory, no args */
const int32_t CUSTOMCANCELSLEEP  = 0;               /* 0 = default 5 s after SIGUSR1 */
const bool ACCURATEPLUGINPARAMETER = true;          /* send Accurate=1 for accurate I/D jobs */
const int ADDINCLUDESTRIPOPTION  = 0;
const bool DONOTSAVE_FT_PLUGIN_CONFIG = false;      /* keep restore "Plugin Options" */
const uint32_t BACKEND_TIMEOUT   = 0;               /* 0 = default 3600 s per I/O operation */
const bool CORELOCALRESTORE      = false;           /* the backend handles every restored file */

checkFile_t checkFile = NULL;                       /* names in the namespace are always seen */

/* No METADATA_* streams. */
const metadataTypeMap plugin_metadata_map[] = {{NULL, plugin_meta_invalid}};

