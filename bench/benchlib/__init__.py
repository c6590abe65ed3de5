"""davsyncd benchmark: data generation, servers, clients, rows, reports."""
