"""wadaemon: keeps every WhatsApp conversation of linked accounts durably in a database."""
