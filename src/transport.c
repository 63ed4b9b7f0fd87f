/* transport.c - libcurl transport (placeholder). */
typedef int kn_transport_placeholder;
