DROP TABLE state_totals;
DROP TABLE nodes;
DROP TABLE job_events;
DROP TABLE jobs;
