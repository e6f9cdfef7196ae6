DROP TABLE templates;
DROP TABLE job_graph;
